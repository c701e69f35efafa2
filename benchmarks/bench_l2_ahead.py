"""GPU benchmark: a weight streamed into L2 while the kernels before its reader leave HBM idle
(`tierlm.kernels.l2_ahead`), on a Llama-3.1-8B decode layer at batch 1.

One layer is what the engine runs at batch 1 (the launches its tuner picked on an H200): RMSNorm, the QKV
GEMV, q/k rotary, decode attention over `--context` tokens (the step's K/V stored by the kernel), the O GEMV,
RMSNorm, gate/up on cuBLAS, SiLU·mul, the down GEMV; 32 layers with their own weights and KV pools, captured
in one CUDA graph, all kernels PDL-launched where they can be. Variants add the L2 prefetch of the O weight
at one point of the chain (and of the first part of gate/up), and must give bit-identical outputs. Also:
the O GEMV alone from HBM and from L2, and the prefetch kernel alone.
Usage: `PYTHONPATH=. python benchmarks/bench_l2_ahead.py [--context 512]`; needs CUDA (sm_90+).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton

from benchmarks.bench_gemv_chain import time_graph
from tierlm.kernels.decode_attention import decode_attention
from tierlm.kernels.fused import qk_norm_rope, rmsnorm, silu_mul
from tierlm.kernels.gemv import GemvConfig, gemv
from tierlm.kernels.l2_ahead import l2_ahead

H, QKV, ATTN, INTER, LAYERS, HEADS, KV_HEADS, DIM = 4096, 6144, 4096, 14336, 32, 32, 8, 128
CFG_QKV, CFG_O, CFG_DOWN = GemvConfig(2, 1024, 4, True), GemvConfig(4, 512, 4, True), GemvConfig(4, 512, 4, True)


def make_layers(context: int) -> list[dict]:
    gen = torch.Generator(device="cuda").manual_seed(0)

    def rand(*s, scale=0.02):
        return (torch.randn(*s, generator=gen, device="cuda") * scale).to(torch.bfloat16)

    slots = triton.next_power_of_2(context + 1)
    return [dict(n1=1 + rand(H), qkv=rand(QKV, H), o=rand(H, ATTN), n2=1 + rand(H), gu=rand(2 * INTER, H),
                 down=rand(H, INTER), k=rand(slots, KV_HEADS, DIM, scale=1.0), v=rand(slots, KV_HEADS, DIM, scale=1.0))
            for _ in range(LAYERS)]


def run_chain(layers: list[dict], x, res, meta: dict, where: str, ahead: dict) -> torch.Tensor:
    """The layers in order; `where` names the point of the O prefetch ('' for none), `ahead` its options
    (and `gu_mib`: MiB of gate/up prefetched just before the O GEMV)."""
    opts = {k: v for k, v in ahead.items() if k != "gu_mib"}
    for w in layers:
        h, res = rmsnorm(x, w["n1"], 1e-5, res)
        qkv = gemv(h, w["qkv"], config=CFG_QKV)
        if where == "after-qkv":
            l2_ahead(w["o"], **opts)
        q, k = qk_norm_rope(qkv, meta["pos"], meta["cos"], meta["sin"], HEADS, KV_HEADS, DIM)
        if where == "after-rope":
            l2_ahead(w["o"], **opts)
        v = qkv[:, QKV - KV_HEADS * DIM:].view(-1, KV_HEADS, DIM)
        attn = decode_attention(q, w["k"], w["v"], meta["r2t"], meta["rows"], meta["lens"], meta["out"],
                                meta["mid_o"], meta["mid_lse"], DIM ** -0.5, new_kv=(k, v, meta["loc"]))
        if ahead.get("gu_mib"):
            l2_ahead(w["gu"][: ahead["gu_mib"] * 128], **opts)  # 128 rows of 4,096 bf16 = 1 MiB
        o = gemv(attn.view(1, ATTN), w["o"], config=CFG_O)
        h, res = rmsnorm(o, w["n2"], 1e-5, res)
        x = gemv(silu_mul(F.linear(h, w["gu"])), w["down"], config=CFG_DOWN)
    return x + res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, L2 {props.L2_cache_size / 2**20:.0f} MiB; torch {torch.__version__}; "
          f"triton {triton.__version__}")
    layers = make_layers(args.context)
    ctx, slots = args.context, layers[0]["k"].shape[0]
    pos = torch.full((1,), ctx, dtype=torch.int64, device="cuda")
    inv = 1.0 / (500000.0 ** (torch.arange(0, DIM, 2, device="cuda").float() / DIM))
    ang = torch.outer(torch.arange(slots, device="cuda").float(), inv)
    meta = dict(pos=pos, cos=torch.cat([ang.cos()] * 2, -1), sin=torch.cat([ang.sin()] * 2, -1),
                r2t=torch.arange(slots, dtype=torch.int32, device="cuda").view(1, -1),
                rows=torch.zeros(1, dtype=torch.int32, device="cuda"),
                lens=torch.full((1,), ctx + 1, dtype=torch.int32, device="cuda"),
                out=torch.empty(1, HEADS, DIM, dtype=torch.bfloat16, device="cuda"),
                mid_o=torch.empty(1, HEADS, 16, DIM, dtype=torch.float32, device="cuda"),
                mid_lse=torch.empty(1, HEADS, 16, dtype=torch.float32, device="cuda"),
                loc=torch.full((1,), ctx, dtype=torch.int64, device="cuda"))
    gen = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(1, H, generator=gen, device="cuda").to(torch.bfloat16)
    res = torch.randn(1, H, generator=gen, device="cuda").to(torch.bfloat16)

    rows = []
    o_bytes = H * ATTN * 2
    a = torch.randn(1, ATTN, device="cuda").to(torch.bfloat16)
    cold, _ = time_graph(lambda: [gemv(a, w["o"], config=CFG_O) for w in layers][-1], args.reps)
    warm, _ = time_graph(lambda: [gemv(a, layers[0]["o"], config=CFG_O) for _ in layers][-1], args.reps)
    pf, _ = time_graph(lambda: [l2_ahead(w["o"]) for w in layers] and a, args.reps)
    rows += [("O GEMV alone, weights from HBM", cold), ("O GEMV alone, the same weight (L2)", warm),
             ("l2_ahead(O weight) alone, 64 KiB chunks", pf)]

    variants = [("none", "", {}), ("O after QKV", "after-qkv", {}), ("O after rotary", "after-rope", {}),
                ("O after rotary, 16 KiB", "after-rope", dict(chunk_kib=16)),
                ("O after rotary, 256 KiB", "after-rope", dict(chunk_kib=256)),
                ("O after rotary, evict_last", "after-rope", dict(evict_last=True)),
                ("O after QKV, evict_last", "after-qkv", dict(evict_last=True)),
                ("O after rotary + 8 MiB gate/up", "after-rope", dict(gu_mib=8)),
                ("O after rotary + 16 MiB gate/up", "after-rope", dict(gu_mib=16))]
    base = None
    for label, where, ahead in variants:
        us, out = time_graph(lambda: run_chain(layers, x, res, meta, where, ahead), args.reps)
        if base is None:
            base = out
        elif not torch.equal(out, base):
            print(f"{label}: NOT bit-identical to the chain without the prefetch")
        rows.append((f"chain: {label}", us))
    print(f"\nLlama-3.1-8B shapes, batch 1, context {ctx}, {LAYERS} layers; O weight {o_bytes / 2**20:.0f} MiB")
    print(f"{'what':48s} {'us per graph':>12} {'us per layer':>12}")
    for label, us in rows:
        print(f"{label:48s} {us:12.1f} {us / LAYERS:12.2f}")
    print(f"O GEMV alone: HBM {o_bytes * LAYERS / cold / 1e6:.2f} TB/s, L2 {o_bytes * LAYERS / warm / 1e6:.2f} TB/s")


if __name__ == "__main__":
    main()
