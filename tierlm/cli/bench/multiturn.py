"""`tierlm bench multiturn`: N clients x R rounds of growing conversations, GPU-only vs +L2 vs +L2+L3.

Each round every client sends its whole conversation so far plus a new user turn and gets an answer,
which joins the conversation. The device KV pool is sized (unless --kv-cache-gb is given) so that the
working set (all conversations at their final length) is --working-set-factor times the pool: the
prefix cache alone cannot keep every conversation, the lower tiers can. Token ids are random (seeded),
EOS is ignored. Reports TTFT p50/p99 per round, throughput and per-tier hit rates for each mode; writes
`multiturn.json` (raw figures) and `multiturn_ttft.png` (TTFT per round) to --output-dir.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from tierlm.cli.bench.offline import percentiles
from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.cli.bench.context import fitted_context
from tierlm.cli.bench.serve_data import spread_lengths
from tierlm.cli.errors import CLIError
from tierlm.cli.paths import output_dir

MODES = {"gpu": "GPU only", "l2": "+L2 host", "l3": "+L2+L3"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("multiturn", help="Multi-turn conversations: KV tiering benefit per round.",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("workload options")
    g.add_argument("--num-clients", type=int, default=32, help="Concurrent conversations (default: 32).")
    g.add_argument("--num-rounds", type=int, default=8, help="Turns per conversation (default: 8).")
    g.add_argument("--first-turn-len", type=int, default=2048, help="Tokens of the first prompt (default: 2048).")
    g.add_argument("--turn-len", type=int, default=256, help="Tokens of each later user turn (default: 256).")
    g.add_argument("--answer-len", type=int, default=128, help="Tokens of each answer (default: 128).")
    g.add_argument("--random-range-ratio", type=float, default=0.0,
                   help="Prompt turn and answer lengths drawn uniformly from [LEN * (1 - R), LEN * (1 + R)] "
                        "per turn, as vllm bench draws input and output lengths (default: 0, every turn and "
                        "answer exactly its length); R < 1.")
    g.add_argument("--concurrency", type=int, default=4,
                   help="Requests in flight at once; the other conversations wait their turn (default: 4).")
    g.add_argument("--working-set-factor", type=float, default=4.0,
                   help="Working set / device KV pool when --kv-cache-gb is not given (default: 4).")
    g.add_argument("--reuse", action=argparse.BooleanOptionalAction, default=True,
                   help="--no-reuse sends fresh prompts of the same lengths (0%% reuse: measures the tiers' overhead).")
    g.add_argument("--modes", default="gpu,l2,l3", help="Comma list of gpu, l2, l3 (default: all).")
    g.add_argument("--workload-seed", type=int, default=0, help="Seed of the token ids (default: 0).")
    g.add_argument("--output-dir", default="multiturn-out",
                   help="Where the JSON and PNG go (default: ./multiturn-out).")
    g.add_argument("--json", action="store_true", help="Print the summary as one JSON object.")
    add_engine_args(p, model_required=False)
    p.set_defaults(func=run, model="builtin:llama-3.1-8b", load_format="dummy", skip_tokenizer_init=True)


def _conversations(args: argparse.Namespace, vocab: int) -> list[list[list[int]]]:
    """turns[client][round]: the user turn token ids (round 0 is the long first prompt)."""
    rng = random.Random(args.workload_seed)
    hi, ratio = min(vocab, 10000) - 1, args.random_range_ratio

    def length(n: int) -> int:
        return spread_lengths(rng, 1, n, ratio)[0] if ratio else n

    return [[[rng.randint(0, hi) for _ in range(length(args.first_turn_len if r == 0 else args.turn_len))]
             for r in range(args.num_rounds)] for _ in range(args.num_clients)]


def _answer_lens(args: argparse.Namespace) -> list[list[int]]:
    """answer_lens[client][round]: tokens of each answer (their own seed: the prompts do not change with R)."""
    rng, n, ratio = random.Random(args.workload_seed + 2), args.answer_len, args.random_range_ratio
    return [spread_lengths(rng, args.num_rounds, n, ratio) if ratio else [n] * args.num_rounds
            for _ in range(args.num_clients)]


def _bytes_per_token(config, model_cfg) -> int:
    """KV bytes of one token (all layers) as the model's declared layout has them."""
    from tierlm.engine.model_runner import resolve_device, resolve_dtype, resolve_kv_dtype
    from tierlm.models.registry import model_class

    dtype = resolve_dtype(config.dtype, model_cfg, resolve_device(config.device))
    kv_dtype = resolve_kv_dtype(config.kv_cache_dtype, dtype)
    return model_class(model_cfg.architecture).kv_layout(model_cfg, kv_dtype).bytes_per_token_all_layers


def run_mode(config, mode: str, args, turns, answer_lens, store_dir: str, bar) -> dict:
    from tierlm.engine.engine import Engine
    from tierlm.sampling_params import SamplingParams

    tiers = {"gpu": {}, "l2": {"enable_hicache": True},
             "l3": {"enable_hicache": True, "kv_store": config.kv_store or f"file://{store_dir}"}}[mode]
    cfg = config.replace(**{"enable_hicache": False, "kv_store": None, **tiers})
    engine = Engine(cfg)
    # First-use work (kernel compilation and autotuning, lazy CUDA module loads for new GEMM shapes) must not
    # land in round 1 of whichever mode runs first: warm up with round 1's shapes, `concurrency` prompts of
    # the first turn's length (token ids no conversation uses, so nothing is reused from them). They are not
    # cached: as the oldest host copies they would be the first written to L3 (the write gate's first window
    # spent on pages nobody reads), and a restart on that store would find them and time it while idle.
    n, vocab = min(args.first_turn_len, engine.max_model_len - 8), min(engine.model_config.vocab_size, 10000)
    for i in range(args.concurrency):
        engine.add_request(f"warmup-{i}", [(1009 * i + 7 * j + 1) % vocab for j in range(n)],
                           SamplingParams(max_tokens=2, ignore_eos=True, detokenize=False), cache=False)
    while engine.has_unfinished():
        engine.step()
    history = [[] for _ in turns]
    fresh = random.Random(args.workload_seed + 1)
    rounds, out_tokens, in_tokens, t_start = [], 0, 0, time.perf_counter()
    for r in range(args.num_rounds):
        start, first, answers, submitted, cached = time.perf_counter(), {}, {}, {}, {}
        queue = list(range(len(turns)))  # clients in order: a client's next turn comes after all the others
        in_flight = 0
        while queue or engine.has_unfinished():
            while queue and in_flight < args.concurrency:
                c = queue.pop(0)
                prompt = history[c] + turns[c][r]
                if not args.reuse:  # same lengths, fresh tokens: nothing to reuse
                    prompt = [fresh.randint(0, min(engine.model_config.vocab_size, 10000) - 1) for _ in prompt]
                in_tokens += len(prompt)
                rid = f"{r}-{c}"
                engine.add_request(rid, prompt, SamplingParams(temperature=0.0, max_tokens=answer_lens[c][r],
                                                               ignore_eos=True, detokenize=False))
                answers[rid], submitted[rid] = [], time.perf_counter()
                in_flight += 1
            for o in engine.step():
                if o.error:
                    raise CLIError(f"request {o.request_id} failed: {o.error}")
                if o.new_token_ids:
                    first.setdefault(o.request_id, time.perf_counter() - submitted[o.request_id])
                    cached.setdefault(o.request_id, o.num_cached_tokens)
                    answers[o.request_id].extend(o.new_token_ids)
                if o.finished:
                    in_flight -= 1
        prompt_lens = [len(history[c]) + len(conv[r]) for c, conv in enumerate(turns)]
        for c, conv in enumerate(turns):
            history[c] = history[c] + conv[r] + answers[f"{r}-{c}"]
            out_tokens += len(answers[f"{r}-{c}"])
        rounds.append({"round": r, "elapsed_s": time.perf_counter() - start,
                       "ttft_s": percentiles(list(first.values())),
                       # per client, for pooling runs and for reading one request's TTFT beside its hit
                       "ttft_values_s": [first[f"{r}-{c}"] for c in range(len(turns))],
                       "submitted_s": [submitted[f"{r}-{c}"] - start for c in range(len(turns))],
                       "cached_tokens": [cached[f"{r}-{c}"] for c in range(len(turns))],
                       "prompt_tokens": prompt_lens})
        bar.update(1)
    elapsed = time.perf_counter() - t_start
    stats = engine.stats()
    engine.close()
    hits = stats["tier_hits"]
    return {"mode": mode, "label": MODES[mode], "rounds": rounds, "elapsed_s": elapsed,
            "output_tok_per_s": out_tokens / elapsed, "total_tok_per_s": (in_tokens + out_tokens) / elapsed,
            "prompt_tokens": in_tokens, "hit_rate": {t: v["tokens"] / max(in_tokens, 1) for t, v in hits.items()},
            "tier_hits": hits, "tiers": stats["tiers"], "kv_pool_tokens": stats["kv_total_tokens"],
            "step_host": stats["step_host"], "gc": stats["gc"]}


def plot(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for res in results:
        xs = [r["round"] + 1 for r in res["rounds"]]
        ax.plot(xs, [r["ttft_s"]["p50"] for r in res["rounds"]], marker="o", label=f"{res['label']} p50")
        ax.plot(xs, [r["ttft_s"]["p99"] for r in res["rounds"]], linestyle="--", alpha=0.6, label=f"{res['label']} p99")
    ax.set_xlabel("round")
    ax.set_ylabel("TTFT (s)")
    ax.set_title("Multi-turn TTFT per round")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from tierlm.engine.errors import ModelLoadError
    from tierlm.models.config import ModelConfig
    from tierlm.models.loader import resolve_model_dir

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise CLIError(f"--modes: pick from {', '.join(MODES)}")
    if min(args.num_clients, args.num_rounds, args.first_turn_len, args.turn_len, args.answer_len,
           args.concurrency) < 1:
        raise CLIError("--num-clients, --num-rounds, --concurrency and the lengths must be >= 1")
    if not 0 <= args.random_range_ratio < 1:
        raise CLIError("--random-range-ratio must be in [0, 1)")
    out_dir = output_dir(args.output_dir, "--output-dir")
    config = config_from_args(args)
    try:
        model_cfg = ModelConfig.from_dir(resolve_model_dir(config.model, config.revision, need_weights=False))
        per_token = _bytes_per_token(config, model_cfg)
    except (ModelLoadError, ValueError) as e:
        raise CLIError(str(e)) from None
    turns, answer_lens = _conversations(args, model_cfg.vocab_size), _answer_lens(args)
    finals = [sum(map(len, conv)) + sum(lens) for conv, lens in zip(turns, answer_lens)]
    final_len, working_set = max(finals), sum(finals)
    try:  # no default beyond what the conversations need
        limit = fitted_context(model_cfg, config.max_model_len, final_len + config.page_size, f"The longest "
                               f"conversation ({final_len} tokens of --first-turn-len, --turn-len, --num-rounds and "
                               "--answer-len, and a page)", default=0)
    except ValueError as e:
        raise CLIError(str(e)) from None
    changes = {"max_model_len": limit}
    if config.kv_cache_gb is None:
        pool_tokens = max(int(working_set / args.working_set_factor), (args.concurrency + 1) * final_len)
        changes["kv_cache_gb"] = pool_tokens * per_token / 2**30
    if config.hicache_size is None and args.hicache_ratio == 2.0:  # default: let L2 hold the working set
        changes["hicache_ratio"] = args.working_set_factor + 1
    config = config.replace(**changes)
    results = []
    with tempfile.TemporaryDirectory(prefix="tierlm-mt-kv-") as store_dir:
        bar = tqdm(total=len(modes) * args.num_rounds, desc="multiturn", unit="round", disable=args.json)
        for mode in modes:
            bar.set_postfix_str(MODES[mode])
            try:
                results.append(run_mode(config, mode, args, turns, answer_lens, store_dir, bar))
            except (ModelLoadError, ValueError) as e:
                raise CLIError(str(e)) from None
        bar.close()
    summary = {"model": config.model, "workload": {k: getattr(args, k) for k in (
        "num_clients", "num_rounds", "first_turn_len", "turn_len", "answer_len", "random_range_ratio",
        "working_set_factor", "reuse", "concurrency")},
        "working_set_tokens": working_set, "kv_cache_gb": config.kv_cache_gb, "hicache_ratio": config.hicache_ratio,
        "output_dir": str(out_dir), "results": results}
    (out_dir / "multiturn.json").write_text(json.dumps(summary, indent=2))
    summary["plot"] = str(out_dir / "multiturn_ttft.png") if plot(results, out_dir / "multiturn_ttft.png") else None
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


def format_table(s: dict) -> str:
    lines = [f"model {s['model']}  working set {s['working_set_tokens']} tokens  device pool "
             f"{s['results'][0]['kv_pool_tokens']} tokens  host ratio {s['hicache_ratio']}"]
    head = f"{'mode':<10}{'out tok/s':>11}{'all tok/s':>11}" + "".join(f"{'hit ' + t:>9}" for t in ("L1", "L2", "L3"))
    lines.append(head + "   TTFT p50 per round (s)")
    for r in s["results"]:
        hit = "".join(f"{r['hit_rate'][t]:>9.1%}" for t in ("L1", "L2", "L3"))
        ttft = " ".join(f"{x['ttft_s']['p50']:.3f}" for x in r["rounds"])
        lines.append(f"{r['mode']:<10}{r['output_tok_per_s']:>11.1f}{r['total_tok_per_s']:>11.1f}{hit}   {ttft}")
    lines.append(f"raw figures: {Path(s['output_dir']) / 'multiturn.json'}"
                 + (f", plot: {s['plot']}" if s.get("plot") else " (install matplotlib for the plot)"))
    return "\n".join(lines)
