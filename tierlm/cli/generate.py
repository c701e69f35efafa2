"""`tierlm generate`: offline generation for prompts given on the command line or in a file."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.cli.errors import CLIError
from tierlm.cli.sampling_flags import sampling_from_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="Generate text for prompts offline (no server).",
                       description="Generate completions for --prompt (repeatable) and/or --prompts-file "
                                   "(one prompt per line) and print them.")
    g = p.add_argument_group("generation options")
    g.add_argument("--prompt", action="append", default=[], help="A prompt (repeat for several).")
    g.add_argument("--prompts-file", help="File with one prompt per line ('-' for stdin).")
    g.add_argument("--max-tokens", type=int, default=64, help="Most new tokens per prompt (default: 64).")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: 0).")
    g.add_argument("--top-p", type=float, default=1.0, help="Nucleus sampling mass (default: 1).")
    g.add_argument("--top-k", type=int, default=-1, help="Keep the k most likely tokens; -1 or 0 = off (default -1).")
    g.add_argument("--min-p", type=float, default=0.0, help="Drop tokens below min_p x the top probability.")
    g.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 discourages tokens already in the prompt or output (vLLM's; default: 1 = off).")
    g.add_argument("--presence-penalty", type=float, default=0.0,
                   help="Subtracted from the logit of every token already generated (OpenAI's, -2 to 2).")
    g.add_argument("--frequency-penalty", type=float, default=0.0,
                   help="Subtracted once per earlier occurrence of a token in the output (OpenAI's, -2 to 2).")
    g.add_argument("--sampling-seed", type=int, default=None, help="Seed per request (reproducible sampling).")
    g.add_argument("--stop", action="append", default=[], help="Stop string (repeatable).")
    g.add_argument("--ignore-eos", action="store_true", help="Keep generating past the end-of-sequence token.")
    g.add_argument("--min-tokens", type=int, default=0,
                   help="Generate at least this many tokens before an end-of-sequence token or a stop string may "
                        "end a prompt's output (default: 0).")
    g.add_argument("--include-stop-str-in-output", action="store_true",
                   help="Keep the stop string that ended an output at the end of its text.")
    g.add_argument("--stop-token-ids", type=_token_ids, default=[], metavar="ID[,ID...]",
                   help="Token ids that end a prompt's output, comma-separated (beside end of sequence).")
    g.add_argument("--prompt-logprobs", type=int, default=None, metavar="N",
                   help="Score each prompt: print its log-likelihood and perplexity (with --json, each prompt "
                        "token's logprob, rank and top N alternatives).")
    g.add_argument("--json", action="store_true", help="Print one JSON object per prompt.")
    add_engine_args(p, groups=("model", "parallel", "memory", "scheduler", "cache tiers"))
    p.set_defaults(func=run)


def _token_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids, got {text!r}") from None


def _scored(out: Any) -> dict[str, Any]:
    """A scored prompt's log-likelihood (the sum of its tokens' logprobs after the first), token count and
    perplexity."""
    lps = [lp.logprob for lp in out.prompt_logprobs or [] if lp is not None]
    total = sum(lps)
    return {"log_likelihood": total, "scored_tokens": len(lps),
            "perplexity": math.exp(-total / len(lps)) if lps else None}


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        if args.prompts_file == "-":
            text = sys.stdin.read()
        else:
            path = Path(args.prompts_file)
            if not path.exists():
                raise CLIError(f"--prompts-file {args.prompts_file!r} does not exist")
            if path.is_dir():
                raise CLIError(f"--prompts-file {args.prompts_file!r} is a directory; give a text file "
                               f"with one prompt per line")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise CLIError(f"--prompts-file {args.prompts_file!r} is not UTF-8 text: {e}") from None
            except OSError as e:
                raise CLIError(f"--prompts-file {args.prompts_file!r}: cannot read: {e.strerror or e}") from None
        prompts.extend(line for line in text.splitlines() if line.strip())
    if not prompts:
        raise CLIError("give at least one --prompt or a non-empty --prompts-file")
    return prompts


def run(args: argparse.Namespace) -> int:
    from tierlm.engine.errors import ModelLoadError
    from tierlm.engine.llm import LLM
    from tierlm.errors import describe_startup_error, is_out_of_memory

    prompts = _read_prompts(args)
    params = sampling_from_flags(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                                 top_k=args.top_k, min_p=args.min_p, seed=args.sampling_seed, stop=args.stop,
                                 ignore_eos=args.ignore_eos, repetition_penalty=args.repetition_penalty,
                                 presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                                 min_tokens=args.min_tokens, stop_token_ids=args.stop_token_ids,
                                 include_stop_str_in_output=args.include_stop_str_in_output,
                                 prompt_logprobs=args.prompt_logprobs)
    config = config_from_args(args)
    try:
        llm = LLM(**{k: v for k, v in config.__dict__.items()})
    except (ModelLoadError, ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from None
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        raise CLIError(describe_startup_error(e)) from None
    outputs = llm.generate(prompts, params, use_tqdm=len(prompts) > 1)
    failed = 0
    for prompt, out in zip(prompts, outputs):
        failed += out.error is not None
        scored = _scored(out) if args.prompt_logprobs is not None and out.error is None else None
        if args.json:
            row = {"prompt": prompt, "text": out.text, "token_ids": out.token_ids, "finish_reason": out.finish_reason,
                   "cached_tokens": out.num_cached_tokens, "ttft_s": round(out.ttft, 6), "error": out.error}
            if scored is not None:
                row.update(scored, prompt_logprobs=[None if lp is None else {
                    "token_id": lp.token_id, "logprob": lp.logprob, "rank": lp.rank, "top": lp.top}
                    for lp in out.prompt_logprobs])
            print(json.dumps(row))
        elif out.error:
            print(f"[error] {prompt!r}: {out.error}", file=sys.stderr)
        else:
            print(f"{prompt}{out.text}\n  [{out.finish_reason}, {len(out.token_ids)} tokens, "
                  f"{out.num_cached_tokens} cached, ttft {out.ttft * 1e3:.1f} ms]")
            if scored is not None and scored["scored_tokens"]:
                print(f"  [prompt: log-likelihood {scored['log_likelihood']:.4f} over {scored['scored_tokens']} "
                      f"tokens, perplexity {scored['perplexity']:.3f}]")
    return 1 if failed else 0
