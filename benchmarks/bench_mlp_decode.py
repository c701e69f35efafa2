"""GPU benchmark: a decode step's feed-forward blocks at 1-4 rows as the engine runs them now, against the
persistent one-launch feed-forward (`tierlm.kernels.mlp_decode`).

Each layer is RMSNorm(x + residual), gate/up, SiLU·mul, down, chained over the model's layer count with
distinct weights (so they come from HBM) and captured in one CUDA graph. "engine" is what the engine runs: the
GEMV plans for gate/up (after the norm) and down (after SiLU·mul), cuBLAS where they say so (`--tune`: tuned
now; else the 8B's batch-1 plan recorded in docs/benchmarks.md: the norm, cuBLAS, then down with SiLU·mul fused,
n8 k512 pipelined); "cublas" is the norm, cuBLAS, SiLU·mul, cuBLAS. Every persistent launch is checked against
"cublas" (dtype rounding) and for the same bits on a second replay. Prints microseconds per layer and the weight-read rate, fastest last.
Usage: `PYTHONPATH=. python benchmarks/bench_mlp_decode.py [--models llama-3.1-8b,qwen3-0.6b] [--rows 1,4]`.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton

from benchmarks.bench_gemv_chain import time_graph
from tierlm.kernels.fused import rmsnorm, silu_mul
from tierlm.kernels.gemv import gemv, rmsnorm_gemv, silu_mul_gemv
from tierlm.kernels.gemv_tune import bucket_of, tune_gemv
from tierlm.kernels.mlp_decode import MlpConfig, mlp_decode, new_barrier, resident_programs

SHAPES = {"qwen3-0.6b": (1024, 3072, 28), "llama-3.1-8b": (4096, 14336, 32)}  # hidden, intermediate, layers
CONFIGS = ["4 512 4 512 4 4 2", "4 512 4 512 4 4 1 0", "2 512 2 512 4 8 1 0", "2 512 2 512 4 6 1 0",
           "4 256 4 256 4 8 1 0", "8 512 8 512 8 4 1 0", "4 1024 4 1024 8 4 1 0", "2 1024 2 1024 4 8 1 0",
           "2 512 2 512 4 8 2 0", "4 512 4 512 4 8 1"]


def engine_mlp(x, res, w, plans, m):
    """The engine's path for one layer's feed-forward at `m` rows (see `PreNormBlock`, `GatedMLP`)."""
    gu_plan, down_plan = plans
    b = bucket_of(m)
    cfg = gu_plan["rmsnorm"].get(b)
    if cfg is not None:
        gate_up, res = rmsnorm_gemv(x, res, w["n"], 1e-6, w["gu"], None, cfg)
    else:
        h, res = rmsnorm(x, w["n"], 1e-6, res)
        plain = gu_plan["plain"].get(b)
        gate_up = gemv(h, w["gu"], None, plain) if plain is not None else F.linear(h, w["gu"])
    cfg = down_plan["silu_mul"].get(b)
    if cfg is not None:
        return silu_mul_gemv(gate_up, w["down"], cfg), res
    plain = down_plan["plain"].get(b)
    act = silu_mul(gate_up)
    return (gemv(act, w["down"], None, plain) if plain is not None else F.linear(act, w["down"])), res


def cublas_mlp(x, res, w):
    h, res = rmsnorm(x, w["n"], 1e-6, res)
    return F.linear(silu_mul(F.linear(h, w["gu"])), w["down"]), res


def chain(layers, x, res, step):
    for w in layers:
        x, res = step(x, res, w)
    return x + res


def plan_of(n, k, prologues):
    from tierlm.kernels.gemv import GemvConfig

    plan = tune_gemv(n, k, prologues, torch.bfloat16, torch.device("cuda"))["plan"]
    return {p: {int(r): (GemvConfig(**c) if c else None) for r, c in b.items()} for p, b in plan.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llama-3.1-8b,qwen3-0.6b")
    ap.add_argument("--rows", default="1,4")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="comma list of 'n1 k1 n2 k2 warps per_sm ahead [lanes 1/0]' persistent launches; the "
                         "fastest is also timed "
                         "as two launches without the barrier ('apart')")
    ap.add_argument("--tune", action="store_true", help="tune the engine's GEMV plans now (minutes per shape)")
    args = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}",
          flush=True)
    dev, dtype = torch.device("cuda"), torch.bfloat16
    barrier = new_barrier(dev)
    table = []
    for model in args.models.split(","):
        hidden, inter, n_layers = SHAPES[model]
        gen = torch.Generator(device="cuda").manual_seed(0)

        def rand(*s, scale=1.0):
            return (torch.randn(*s, generator=gen, device="cuda") * scale).to(dtype)

        layers = [dict(n=1 + 0.1 * rand(hidden), gu=rand(2 * inter, hidden, scale=hidden ** -0.5),
                       down=rand(hidden, inter, scale=inter ** -0.5)) for _ in range(n_layers)]
        nbytes = sum(w.numel() * w.element_size() for layer in layers for w in layer.values())
        if args.tune:
            plans = (plan_of(2 * inter, hidden, ("plain", "rmsnorm")), plan_of(hidden, inter, ("plain", "silu_mul")))
        else:
            from tierlm.kernels.gemv import GemvConfig

            down = {b: GemvConfig(8, 512, 4, True) for b in (1, 2, 4)}
            plans = ({"rmsnorm": {}, "plain": {}}, {"silu_mul": down, "plain": {}})
        print(f"{model}: engine plans gate/up {plans[0]}, down {plans[1]}", flush=True)
        for m in (int(r) for r in args.rows.split(",")):
            x, res = rand(m, hidden), rand(m, hidden)
            base_us, base = time_graph(lambda: chain(layers, x, res, cublas_mlp))
            eng_us, eng = time_graph(lambda: chain(layers, x, res, lambda a, b, w: engine_mlp(a, b, w, plans, m)))
            rows = [("cublas", base_us, 0.0), ("engine", eng_us, (eng.float() - base.float()).abs().max().item())]
            launches = []
            for text in args.configs.split(","):
                v = [int(t) for t in text.split()]
                cfg = MlpConfig(*v[:7], *(bool(b) for b in v[7:]))
                try:
                    programs = resident_programs(cfg, m, hidden, inter, dtype, dev)
                    step = lambda a, b, w, cfg=cfg, p=programs: mlp_decode(a, b, w["n"], 1e-6, w["gu"], w["down"],
                                                                             cfg, p, barrier)
                    us, out = time_graph(lambda: chain(layers, x, res, step))
                    _, again = time_graph(lambda: chain(layers, x, res, step), reps=2)
                except Exception as e:  # noqa: BLE001 - a launch that cannot build is reported and skipped
                    print(f"{model} rows {m} {cfg.label()}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                    continue
                err = (out.float() - base.float()).abs().max().item()
                note = "" if torch.equal(out, again) else " NOT REPEATABLE"
                rows.append((f"{cfg.label()} p{programs}{note}", us, err))
                if not note:
                    launches.append((us, cfg, programs))
                print(f"{model} rows {m} {rows[-1][0]}: {us / n_layers:.2f} us/layer, err {err:.3g}", flush=True)
            if launches:
                _, cfg, programs = min(launches, key=lambda r: r[0])
                step = lambda a, b, w: mlp_decode(a, b, w["n"], 1e-6, w["gu"], w["down"], cfg, programs, barrier,
                                                  apart=True)
                us, out = time_graph(lambda: chain(layers, x, res, step))
                rows.append((f"{cfg.label()} p{programs} apart", us, (out.float() - base.float()).abs().max().item()))
            scale = base.float().abs().max().item()
            for label, us, err in sorted(rows, key=lambda r: -r[1]):
                table.append((model, m, label, us / n_layers, nbytes / us / 1e3, err / scale))
    print(f"\n{'model':13s} {'rows':>4}  {'launch':44s} {'us/layer':>9} {'GB/s':>6} {'rel err':>8}")
    for model, m, label, us, gbs, rel in table:
        print(f"{model:13s} {m:>4}  {label:44s} {us:9.2f} {gbs:6.0f} {rel:8.2g}")


if __name__ == "__main__":
    main()
