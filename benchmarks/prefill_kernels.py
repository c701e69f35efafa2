"""Why a prefill pass of some lengths costs more per token than others: the model's linear layers timed alone
(`F.linear`, the shapes of the model's projections, eager and replayed from a CUDA graph) at each row count,
then one engine prefill per length under the torch profiler, its device time per kernel.

    PYTHONPATH=. python benchmarks/prefill_kernels.py --model builtin:llama-3.1-8b --rows 1024,2048,4096,8192
"""
from __future__ import annotations

import argparse
import contextlib
import random
from collections import defaultdict

import torch
import torch.nn.functional as F

from benchmarks.timing import median_seconds
from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.engine.engine import Engine
from tierlm.sampling_params import SamplingParams


def linear_shapes(engine: Engine) -> list[tuple[str, int, int]]:
    """(name, out features, in features) of one decoder layer's linear layers."""
    layer = next(m for m in engine.worker.runner.model.modules() if hasattr(m, "mlp"))
    return [(n.rsplit(".", 1)[-1], *mod.weight.shape) for n, mod in layer.named_modules()
            if hasattr(mod, "weight") and mod.weight is not None and mod.weight.dim() == 2]


def linears(shapes: list[tuple[str, int, int]], rows: list[int], dtype: torch.dtype) -> None:
    print(f"{'rows':>6}" + "".join(f"{name + ' ' + str(n) + 'x' + str(k):>24}" for name, n, k in shapes)
          + f"{'layer TFLOP/s':>15}{'graphed':>9}")
    ws = [torch.randn(n, k, device="cuda", dtype=dtype) * 0.02 for _, n, k in shapes]
    for m in rows:
        xs = [torch.randn(m, k, device="cuda", dtype=dtype) for _, _, k in shapes]
        ms = [median_seconds(lambda x=x, w=w: F.linear(x, w), iters=20) * 1e3 for x, w in zip(xs, ws)]
        flop = sum(2 * m * n * k for _, n, k in shapes)
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for x, w in zip(xs, ws):
                F.linear(x, w)
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(graph):
            for x, w in zip(xs, ws):
                F.linear(x, w)
        graphed = median_seconds(graph.replay, iters=20) * 1e3
        cells = "".join(f"{t:>11.3f} ms {2 * m * n * k / t / 1e9:>5.0f} TF" for t, (_, n, k) in zip(ms, shapes))
        print(f"{m:>6}{cells}{flop / sum(ms) / 1e9:>15.0f}{flop / graphed / 1e9:>9.0f}")


def prefill_kernels(engine: Engine, rows: list[int], top: int) -> None:
    vocab = min(engine.model_config.vocab_size, 30000)
    rng = random.Random(0)
    params = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True, detokenize=False)
    for m in rows:
        for attempt in range(2):  # the first pays for first use at this length
            prompt = [rng.randrange(vocab) for _ in range(m)]
            profiler = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) if attempt
                        else contextlib.nullcontext())
            with profiler as prof:
                engine.add_request(f"p{m}-{attempt}", prompt, params)
                while engine.has_unfinished():
                    engine.step()
                torch.cuda.synchronize()
        totals: dict[str, float] = defaultdict(float)
        for evt in prof.key_averages():
            if evt.device_time_total > 0:
                totals[evt.key] += evt.device_time_total / 1e3
        total = sum(totals.values())
        print(f"prefill of {m} tokens: {total:.1f} ms on the device ({total / m * 1e3:.1f} us per token)")
        for name, ms in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
            print(f"   {ms:>9.2f} ms {ms / total * 100:>5.1f}%  {name[:110]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1024,2048,4096,8192", help="Comma list of row counts (prefill lengths).")
    ap.add_argument("--top", type=int, default=10, help="Kernels listed per prefill.")
    add_engine_args(ap, model_required=False)
    ap.set_defaults(model="builtin:llama-3.1-8b", load_format="dummy", skip_tokenizer_init=True)
    args = ap.parse_args()
    rows = [int(r) for r in args.rows.split(",") if r.strip()]
    config = config_from_args(args)
    config = config.replace(max_model_len=config.max_model_len or max(rows) + 64)
    engine = Engine(config)
    linears(linear_shapes(engine), rows, engine.worker.runner.dtype)
    prefill_kernels(engine, rows, args.top)
    engine.close()


if __name__ == "__main__":
    main()
