"""`tierlm bench offline`: the nano-vllm throughput workload, optionally against HF transformers in one run.

256 requests (by default) with input and output lengths uniform in [100, 1024], random token ids from a
fixed seed, EOS ignored; all requests arrive at t=0. Reports output tok/s, TTFT and TPOT percentiles, the
inter-token latency (ITL: each gap between two of a request's token arrivals) and the engine's start-up
times (construction, first token of a warm-up request). A request's TPOT is the mean of its gaps, so a few
long stalls raise it as much as a slower step does; ITL's median and tail tell the two apart.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from array import array
from dataclasses import dataclass
from typing import Sequence

from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.cli.bench.context import bench_context
from tierlm.cli.sampling_flags import sampling_from_flags
from tierlm.cli.errors import CLIError
from tierlm.engine.startup import compiled_artifacts, compiled_since


@dataclass
class Workload:
    """Token-id prompts and output lengths of one benchmark run."""

    prompts: list[list[int]]
    output_lens: list[int]

    @staticmethod
    def make(n: int, in_range: tuple[int, int], out_range: tuple[int, int], vocab: int, seed: int) -> "Workload":
        rng = random.Random(seed)
        id_max = min(vocab, 10000) - 1
        prompts = [[rng.randint(0, id_max) for _ in range(rng.randint(*in_range))] for _ in range(n)]
        return Workload(prompts, [rng.randint(*out_range) for _ in range(n)])

    def with_long(self, n: int, length: int, output_len: int, vocab: int, seed: int) -> "Workload":
        """This workload with its first `n` requests' prompts `length` tokens long and their outputs `output_len`:
        a few long conversations among many short ones (the others unchanged)."""
        rng = random.Random(seed + 1)
        id_max = min(vocab, 10000) - 1
        long = [[rng.randint(0, id_max) for _ in range(length)] for _ in range(min(n, len(self.prompts)))]
        return Workload(long + self.prompts[len(long):], [output_len] * len(long) + self.output_lens[len(long):])


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p99, mean and max of `values` (NaN for each when there are none)."""
    if not values:
        return dict.fromkeys(("p50", "p99", "mean", "max"), float("nan"))
    s = sorted(values)
    pick = lambda q: s[min(len(s) - 1, int(round(q * (len(s) - 1))))]  # noqa: E731
    return {"p50": pick(0.5), "p99": pick(0.99), "mean": sum(s) / len(s), "max": s[-1]}


def run_engine(engine, work: Workload, temperature: float, show_progress: bool, repetition_penalty: float = 1.0
               ) -> dict:
    from tqdm.auto import tqdm

    from tierlm.sampling_params import SamplingParams

    start = time.perf_counter()
    first, last, count = {}, {}, {}
    gaps = array("d")  # every interval between two token arrivals of one request (seconds)
    for i, (ids, n_out) in enumerate(zip(work.prompts, work.output_lens)):
        engine.add_request(str(i), ids, SamplingParams(temperature=temperature, max_tokens=n_out, ignore_eos=True,
                                                       detokenize=False, repetition_penalty=repetition_penalty))
    bar = tqdm(total=sum(work.output_lens), desc="tierlm", unit="tok", disable=not show_progress)
    while engine.has_unfinished():
        outs = engine.step()
        now = time.perf_counter()
        for o in outs:
            if o.new_token_ids:
                first.setdefault(o.request_id, now)
                prev = last.get(o.request_id)
                if prev is not None:
                    gaps.append(now - prev)
                last[o.request_id] = now
                count[o.request_id] = count.get(o.request_id, 0) + len(o.new_token_ids)
                bar.update(len(o.new_token_ids))
            if o.error:
                raise CLIError(f"request {o.request_id} failed: {o.error}")
    elapsed = time.perf_counter() - start
    bar.close()
    total = sum(count.values())
    tpot = [(last[r] - first[r]) / (count[r] - 1) for r in count if count[r] > 1]
    return {"elapsed_s": elapsed, "output_tokens": total, "output_tok_per_s": total / elapsed,
            "ttft_s": percentiles([first[r] - start for r in first]), "tpot_s": percentiles(tpot),
            "itl_s": percentiles(gaps)}


def run_hf(model_dir: str, dtype: str, work: Workload, batch_size: int, seed: int, show_progress: bool) -> dict:
    """Hugging Face transformers `generate` on the same requests (static batches, left padding)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoConfig, AutoModelForCausalLM

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        dtype, torch.bfloat16 if dev == "cuda" else torch.float32)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=tdtype).to(dev).eval()
    order = sorted(range(len(work.prompts)), key=lambda i: len(work.prompts[i]))
    total, start = 0, time.perf_counter()
    bar = tqdm(total=sum(work.output_lens), desc="transformers", unit="tok", disable=not show_progress)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        width = max(len(work.prompts[i]) for i in idx)
        ids = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(idx):
            p = work.prompts[i]
            ids[j, width - len(p):] = torch.tensor(p)
            mask[j, width - len(p):] = 1
        n_new = max(work.output_lens[i] for i in idx)
        with torch.no_grad():
            model.generate(ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=n_new, min_new_tokens=n_new,
                           do_sample=False, pad_token_id=0)
        useful = sum(work.output_lens[i] for i in idx)  # padding rows' extra tokens are not counted
        total += useful
        bar.update(useful)
    bar.close()
    elapsed = time.perf_counter() - start
    return {"elapsed_s": elapsed, "output_tokens": total, "output_tok_per_s": total / elapsed}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("offline", help="Offline throughput (nano-vllm workload).", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("workload options")
    g.add_argument("--num-requests", type=int, default=256, help="Requests in the workload (default: 256).")
    g.add_argument("--input-len", type=int, nargs=2, default=(100, 1024), metavar=("MIN", "MAX"),
                   help="Prompt length range, uniform (default: 100 1024).")
    g.add_argument("--output-len", type=int, nargs=2, default=(100, 1024), metavar=("MIN", "MAX"),
                   help="Output length range, uniform (default: 100 1024).")
    g.add_argument("--long-prompts", type=int, nargs=2, default=(0, 0), metavar=("N", "LEN"),
                   help="The first N requests get prompts of LEN tokens and the longest output of --output-len: a "
                        "few long conversations among short ones (default: none).")
    g.add_argument("--workload-seed", type=int, default=0, help="Seed of the workload (default: 0).")
    g.add_argument("--temperature", type=float, default=0.6, help="Sampling temperature (default: 0.6).")
    g.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="Every request's repetition penalty (default: 1 = off): the cost of penalized sampling.")
    g.add_argument("--compare", choices=("hf",), help="Also run Hugging Face transformers and print the ratio.")
    g.add_argument("--hf-batch-size", type=int, default=64, help="Static batch size for --compare hf (default: 64).")
    g.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    add_engine_args(p, model_required=False)
    p.set_defaults(func=run, model="builtin:qwen3-0.6b", load_format="dummy", skip_tokenizer_init=True)


def run(args: argparse.Namespace) -> int:
    from tierlm.engine.engine import Engine
    from tierlm.engine.errors import ModelLoadError

    lo, hi = args.input_len
    olo, ohi = args.output_len
    n_long, long_len = args.long_prompts
    if args.num_requests < 1 or not (1 <= lo <= hi) or not (1 <= olo <= ohi):
        raise CLIError("--num-requests, --input-len and --output-len must be positive with MIN <= MAX")
    if n_long < 0 or (n_long and long_len < 1):
        raise CLIError("--long-prompts N LEN: N must be 0 or more and LEN positive")
    sampling_from_flags(temperature=args.temperature, repetition_penalty=args.repetition_penalty)
    config = config_from_args(args)
    longest = max(hi, long_len if n_long else 0) + ohi
    t0 = time.perf_counter()
    try:
        config = config.replace(max_model_len=bench_context(config, longest, f"The workload's longest request "
                                                            f"({longest} tokens of --input-len or --long-prompts and "
                                                            "--output-len)"))
        engine = Engine(config)
    except (ModelLoadError, ValueError) as e:
        raise CLIError(str(e)) from None
    construct_s = time.perf_counter() - t0
    warm = run_engine(engine, Workload.make(1, (16, 16), (2, 2), engine.model_config.vocab_size, 1), 0.0, False)
    work = Workload.make(args.num_requests, (lo, hi), (olo, ohi), engine.model_config.vocab_size, args.workload_seed)
    if n_long:
        work = work.with_long(n_long, long_len, ohi, engine.model_config.vocab_size, args.workload_seed)
    kernels = compiled_artifacts()
    result = {"model": config.model, "device": str(engine.device), "dtype": str(engine.worker.runner.dtype),
              "startup": {"construct_s": construct_s, "first_token_s": construct_s + warm["ttft_s"]["p50"]},
              "engine_info": engine.info(), "tierlm": run_engine(engine, work, args.temperature, not args.json,
                                                                   args.repetition_penalty)}
    # kernels first met inside the timed run (new shapes on this cache root): their compile time is in the figures
    names = compiled_since(kernels)
    result["tierlm"]["new_kernels"], result["tierlm"]["new_kernel_names"] = len(names), names
    if args.compare == "hf":
        model_dir = str(engine.model_dir)
        engine.close()
        del engine
        result["hf"] = run_hf(model_dir, config.dtype, work, args.hf_batch_size, config.seed, not args.json)
        result["speedup_vs_hf"] = result["tierlm"]["output_tok_per_s"] / result["hf"]["output_tok_per_s"]
    print(json.dumps(result, indent=2) if args.json else format_table(result), flush=True)
    if "hf" not in result:
        engine.close()  # also stops the other tensor-parallel ranks
    return 0


def format_table(r: dict) -> str:
    t = r["tierlm"]
    lines = [f"model {r['model']}  device {r['device']}  dtype {r['dtype']}",
             f"start-up: construct {r['startup']['construct_s']:.2f} s, "
             f"first token {r['startup']['first_token_s']:.2f} s",
             f"engine: {json.dumps(r['engine_info'])}",
             f"{'engine':<14}{'out tok/s':>12}{'tokens':>10}{'time s':>9}{'TTFT p50/p99 s':>18}{'TPOT p50/p99 ms':>18}"
             f"{'ITL p50/p99/max ms':>24}",
             f"{'tierlm':<14}{t['output_tok_per_s']:>12.1f}{t['output_tokens']:>10}{t['elapsed_s']:>9.2f}"
             f"{t['ttft_s']['p50']:>9.2f}/{t['ttft_s']['p99']:<8.2f}"
             f"{t['tpot_s']['p50'] * 1e3:>9.2f}/{t['tpot_s']['p99'] * 1e3:<8.2f}"
             f"{t['itl_s']['p50'] * 1e3:>9.2f}/{t['itl_s']['p99'] * 1e3:.2f}/{t['itl_s']['max'] * 1e3:.2f}"]
    if t.get("new_kernels"):
        lines.append(f"{t['new_kernels']} kernel(s) compiled during the run (new on this cache root): their compile "
                     f"time is in the figures above ({', '.join(t.get('new_kernel_names', []))})")
    if "hf" in r:
        h = r["hf"]
        lines.append(f"{'transformers':<14}{h['output_tok_per_s']:>12.1f}{h['output_tokens']:>10}"
                     f"{h['elapsed_s']:>9.2f}")
        lines.append(f"speed-up vs transformers: {r['speedup_vs_hf']:.1f}x")
    return "\n".join(lines)
