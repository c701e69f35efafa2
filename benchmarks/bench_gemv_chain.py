"""GPU benchmark: a decode step's chain of small-batch linear layers, with and without programmatic dependent
launch (PDL), against cuBLAS with the unfused norms.

One layer is what `PreNormBlock` runs at batch 1-4: RMSNorm(x + residual) folded into QKV, O (its input a
slice of QKV's output, standing in for attention), RMSNorm folded into gate/up, SiLU·mul folded into down.
The layers are chained with their real data dependencies over `--layers` distinct weight sets (so weights come
from HBM) and captured in one CUDA graph. The PDL variant must give bit-identical outputs to the same launch
without PDL (only the launch changes). Prints microseconds per layer and the weight-read GB/s.
Usage: `PYTHONPATH=. python benchmarks/bench_gemv_chain.py [--model qwen3-0.6b] [--rows 1,4]`; needs CUDA.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
import triton

from benchmarks.timing import captured, median_seconds
from tierlm.kernels.fused import rmsnorm, silu_mul
from tierlm.kernels.gemv import GemvConfig, gemv, rmsnorm_gemv, silu_mul_gemv
from tierlm.kernels.pdl import ENV

SHAPES = {"qwen3-0.6b": dict(hidden=1024, qkv=4096, attn=2048, inter=3072, layers=28),
          "llama-3.1-8b": dict(hidden=4096, qkv=6144, attn=4096, inter=14336, layers=32)}


def make_layers(shape: dict, n_layers: int, dtype: torch.dtype) -> list[dict]:
    h, gen = shape["hidden"], torch.Generator(device="cuda").manual_seed(0)

    def rand(*s, scale=0.02):
        return (torch.randn(*s, generator=gen, device="cuda") * scale).to(dtype)

    return [dict(n1=1 + rand(h), qkv=rand(shape["qkv"], h), o=rand(h, shape["attn"]), n2=1 + rand(h),
                 gu=rand(2 * shape["inter"], h), down=rand(h, shape["inter"])) for _ in range(n_layers)]


def run_chain(layers: list[dict], x: torch.Tensor, res: torch.Tensor, attn: int, cfg) -> torch.Tensor:
    """The layers' linears in order; `cfg` None runs cuBLAS with the unfused norm and SiLU·mul."""
    for w in layers:
        if cfg is None:
            h, res = rmsnorm(x, w["n1"], 1e-6, res)
            qkv = F.linear(h, w["qkv"])
            o = F.linear(qkv[:, :attn], w["o"])
            h, res = rmsnorm(o, w["n2"], 1e-6, res)
            x = F.linear(silu_mul(F.linear(h, w["gu"])), w["down"])
        else:
            qkv, res = rmsnorm_gemv(x, res, w["n1"], 1e-6, w["qkv"], config=cfg)
            o = gemv(qkv[:, :attn], w["o"], config=cfg)
            gu, res = rmsnorm_gemv(o, res, w["n2"], 1e-6, w["gu"], config=cfg)
            x = silu_mul_gemv(gu, w["down"], config=cfg)
    return x + res


def time_graph(fn, reps: int = 20) -> tuple[float, torch.Tensor]:
    """(median microseconds per replay, the output) of `fn()` captured in a CUDA graph."""
    graph, out = captured(fn)
    return median_seconds(graph.replay, reps) * 1e6, out.clone()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen3-0.6b", choices=sorted(SHAPES))
    ap.add_argument("--rows", default="1,4", help="comma list of batch sizes (at most 8)")
    ap.add_argument("--configs", default="n2 k1024,n4 k1024,n8 k1024",
                    help="comma list of 'nN kK' launches, each timed without and with PDL")
    args = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    shape = SHAPES[args.model]
    layers = make_layers(shape, shape["layers"], torch.bfloat16)
    nbytes = sum(w.numel() * w.element_size() for layer in layers for w in layer.values())
    launches = []
    for text in args.configs.split(","):
        n, k = (int(p[1:]) for p in text.split())
        launches += [(GemvConfig(n, k, 4), False), (GemvConfig(n, k, 4), True)]
    rows_out = []
    for m in (int(r) for r in args.rows.split(",")):
        gen = torch.Generator(device="cuda").manual_seed(m)
        x = torch.randn(m, shape["hidden"], generator=gen, device="cuda").to(torch.bfloat16)
        res = torch.randn(m, shape["hidden"], generator=gen, device="cuda").to(torch.bfloat16)
        base_us, base = time_graph(lambda: run_chain(layers, x, res, shape["attn"], None))
        rows_out.append((m, "cublas + unfused", base_us, 0.0))
        plain = None
        for cfg, pdl in launches:
            os.environ[ENV] = "1" if pdl else "0"  # read at each launch, so at capture
            us, out = time_graph(lambda cfg=cfg: run_chain(layers, x, res, shape["attn"], cfg))
            err = (out.float() - base.float()).abs().max().item()
            label = cfg.label() + (" pdl" if pdl else "")
            if pdl and plain is not None and not torch.equal(out, plain):
                print(f"rows {m} {label}: NOT bit-identical to the same launch without PDL")
            plain = None if pdl else out
            rows_out.append((m, label, us, err))
    per = shape["layers"]
    print(f"\n{args.model}, {per} layers, {nbytes / 1e9:.3f} GB of weights per step")
    print(f"{'rows':>4}  {'launch':18s} {'us/step':>9} {'us/layer':>9} {'GB/s':>7} {'max err vs cuBLAS':>18}")
    for m, label, us, err in rows_out:
        print(f"{m:>4}  {label:18s} {us:9.1f} {us / per:9.2f} {nbytes / us / 1e3:7.0f} {err:18.3g}")


if __name__ == "__main__":
    main()
