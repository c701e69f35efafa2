"""The batch-1 decode step as one persistent launch (`tierlm.kernels.decode_stream`): checked, then timed.

1. Check: a model of the shape's widths with `--check-layers` layers, random weights; the stream's logits and
   the K/V it stores against `decode_stream_reference.reference_step` (fp32 torch), and the step run again
   twice bit for bit.
2. Time: the whole shape (every layer and the LM head), one launch per step captured in a CUDA graph, for each
   ring depth of `--stages` and each context length of `--contexts`; the weight bytes per step over the time.
   Each with the probes of `DecodeStream.run` (without waits, attention or dot products; the ring alone):
   where the step's time goes.
3. `--baseline`: the same weights' linears alone (QKV, O, gate/up, down per layer, the LM head) as cuBLAS
   matrix-vector products in one CUDA graph, the way a kernel-per-op step reads them. `--trace`: per op, the
   mean over layers of each CTA's wait, input load and tiles, and the op's critical path. `--cta-probe 132,66`:
   the ring alone on fewer CTAs (whether its speed is the memory's or its copies').

Usage: PYTHONPATH=. python benchmarks/bench_decode_stream.py [--shape llama-3.1-8b] [--contexts 128,640]
[--stages 4,5] [--check-layers 2] [--reps 20] [--baseline] [--trace] [--cta-probe N,...]. Needs CUDA (Hopper:
bulk copies, 227 KB of shared memory per block).
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from benchmarks.decode_stream_reference import SHAPES, random_model, reference_step
from benchmarks.timing import captured, median_seconds
from tierlm.kernels.decode_stream import DecodeStream


VARIANTS = (("stream", {}), ("its consumers without waits (wrong outputs)", {"no_waits": True}),
            ("without attention (wrong outputs)", {"no_attention": True}),
            ("without attention or waits (wrong outputs)", {"no_attention": True, "no_waits": True}),
            ("without attention, waits or dot products (wrong outputs)",
             {"no_attention": True, "no_waits": True, "no_dots": True}),
            ("without attention or dot products (wrong outputs)", {"no_attention": True, "no_dots": True}),
            ("its ring alone (weights only)", {"weights_only": True}))


def build(m, stages: int, num_ctas: Optional[int] = None) -> DecodeStream:
    s = m.shape
    return DecodeStream(m.embed, m.layers, m.final_norm, m.lm_head, m.cos, m.sin, m.inputs, q_heads=s.q_heads,
                        kv_heads=s.kv_heads, eps=1e-5, scale=128 ** -0.5, stages=stages, num_ctas=num_ctas)


def check(shape, layers: int, context: int, stages: int, dev: torch.device) -> bool:
    m = random_model(dataclasses.replace(shape, layers=layers), context, dev, seed=1)
    ref_layers = [dataclasses.replace(ly, k_cache=ly.k_cache.clone(), v_cache=ly.v_cache.clone()) for ly in m.layers]
    ref = reference_step(m, ref_layers)
    stream = build(m, stages)
    got = stream.run().clone()
    # its caches now hold the new token already: the same step again, twice
    again = all(torch.equal(stream.run(), got) for _ in range(2))
    loc = int(m.inputs.out_loc[0])
    pairs = [(x, y) for a, b in zip(m.layers, ref_layers) for x, y in ((a.k_cache, b.k_cache), (a.v_cache, b.v_cache))]
    kv = max(float((x[loc].float() - y[loc].float()).abs().max()) for x, y in pairs)
    untouched = all(torch.equal(torch.cat([x[:loc], x[loc + 1:]]), torch.cat([y[:loc], y[loc + 1:]])) for x, y in pairs)
    rel = float((got - ref).abs().max() / ref.abs().max())
    ok = rel < 2e-3 and int(got.argmax()) == int(ref.argmax()) and kv <= 0.0625 and untouched and again
    print(f"check {layers} layers, context {context}, stages {stages}: logits max |diff| / max |ref| {rel:.2e}, "
          f"argmax {int(got.argmax())} / {int(ref.argmax())}, new K/V max |diff| {kv:.4f}, other slots untouched "
          f"{untouched}, repeats bit for bit {again}: {'PASS' if ok else 'FAIL'}")
    return ok


def linears_graph(m) -> "torch.cuda.CUDAGraph":
    x = torch.randn(1, m.shape.hidden, device=m.embed.device, dtype=torch.bfloat16)
    a = torch.randn(1, m.shape.inter, device=x.device, dtype=torch.bfloat16)

    def step() -> torch.Tensor:
        for ly in m.layers:
            F.linear(x, ly.qkv)
            F.linear(x, ly.o)
            F.linear(x, ly.gate_up)
            F.linear(a, ly.down)
        return F.linear(x, m.lm_head)

    return captured(step)[0]


def trace_table(stream: DecodeStream, **kw) -> None:
    """Where a step's time goes, per kind of op (mean over layers, CTAs that had work): waiting for the op
    before, loading the input, the tiles and epilogues; and the critical path from the op before's last CTA."""
    trace = torch.zeros(stream.ops.shape[0], stream.num_ctas, 4, dtype=torch.int64, device=stream.ops.device)
    stream.run(trace=trace, **kw)
    torch.cuda.synchronize()
    t = trace.double().cpu() / 1e3  # us
    kinds: dict = {}
    for o, name in enumerate(stream.op_names):
        worked = t[o, :, 1] > 0
        last_before = t[o - 1, :, 3].max() if o else t[o, :, 0].min()
        row = kinds.setdefault(name, [])
        w = t[o][worked]
        row.append((float((w[:, 1] - w[:, 0]).mean()), float((w[:, 2] - w[:, 1]).mean()),
                    float((w[:, 3] - w[:, 2]).mean()), float(t[o, :, 3].max() - last_before),
                    float(t[o, :, 3].max() - t[o, :, 3].min())))
    total = float(t[:, :, 3].max() - t[0, :, 0].min())
    print(f"\ntrace: {total:.1f} us from the first CTA's start to the last op's last CTA (attention: 'input' is "
          "the items' own work, 'tiles' the merge)\n| op | waiting | input | tiles + epilogue | critical path | "
          "arrival spread | x count |\n|---|---|---|---|---|---|---|")
    for name, rows in kinds.items():
        mean = [sum(r[i] for r in rows) / len(rows) for i in range(5)]
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in mean) + f" | {len(rows)} |")


def in_kernel_rate(stream: DecodeStream, **kw) -> float:
    """Weight bytes over the time from the first CTA's start to the last CTA's end (the global timer), TB/s: a
    launch's own time, without the launch around it."""
    trace = torch.zeros(stream.ops.shape[0], stream.num_ctas, 4, dtype=torch.int64, device=stream.ops.device)
    rates = []
    for _ in range(3):
        stream.run(trace=trace, **kw)
        torch.cuda.synchronize()
        rates.append(stream.weight_bytes / (float(trace[:, :, 3].max() - trace[0, :, 0].min()) * 1e-9) / 1e12)
    return max(rates)


def cta_probe(stages: int, dev: torch.device, ctas: list[int]) -> None:
    """The ring alone with fewer CTAs (SMs): if its speed follows the count, each SM's copies are the limit; if it
    holds, the memory is."""
    m = random_model(SHAPES["llama-3.1-8b"], 640, dev)
    for n in ctas:
        stream = build(m, stages, n)
        print(f"ring alone, {n} CTAs, {stages} stages: {in_kernel_rate(stream, weights_only=True):.2f} TB/s in the "
              f"kernel")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="llama-3.1-8b", choices=sorted(SHAPES))
    ap.add_argument("--contexts", default="128,640", help="tokens already in the cache, comma-separated")
    ap.add_argument("--stages", default="4,5", help="ring depths to time, comma-separated")
    ap.add_argument("--check-layers", type=int, default=2, help="layers of the checked model (0: no check)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--baseline", action="store_true", help="also time the linears alone through cuBLAS")
    ap.add_argument("--trace", action="store_true", help="also print where the step's time goes, op by op")
    ap.add_argument("--cta-probe", default="", help="first: the ring alone on these numbers of CTAs (comma-separated)")
    args = ap.parse_args()
    dev = torch.device("cuda")
    shape = SHAPES[args.shape]
    contexts = [int(c) for c in args.contexts.split(",")]
    stages = [int(s) for s in args.stages.split(",")]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, shape {args.shape} {shape}")
    if args.cta_probe:
        cta_probe(stages[0], dev, [int(n) for n in args.cta_probe.split(",")])
    ok = all(check(shape, args.check_layers, c, s, dev) for c in contexts for s in stages if args.check_layers)
    rows = []
    for c in contexts:
        m = random_model(shape, c, dev)
        for s in stages:
            stream = build(m, s)
            for label, kw in VARIANTS:
                graph = captured(lambda: stream.run(**kw))[0]
                t = median_seconds(graph.replay, iters=args.reps, warmup=3)
                rows.append((f"{label}, {s} stages", c, t, stream.weight_bytes))
            if args.trace:
                for label, kw in VARIANTS[:3]:
                    print(f"{label}, context {c}, {s} stages:", end="")
                    trace_table(stream, **kw)
        if args.baseline:
            graph = linears_graph(m)
            t = median_seconds(graph.replay, iters=args.reps, warmup=3)
            rows.append(("cuBLAS linears alone", c, t, build(m, stages[0]).weight_bytes))
        del m
        torch.cuda.empty_cache()
    print("\n| launch | context | ms per step | weight GB | weight TB/s |\n|---|---|---|---|---|")
    for name, c, t, nbytes in rows:
        print(f"| {name} | {c} | {t * 1e3:.3f} | {nbytes / 1e9:.3f} | {nbytes / t / 1e12:.2f} |")
    if not ok:
        raise SystemExit("the decode stream's check FAILED (above)")


if __name__ == "__main__":
    main()
