"""Persistent autotuning of the Triton decode kernel's launch parameters, per device and model shape.

Results live in the cache root's autotune store (`autotune/triton_decode/<fingerprint>.json`), keyed by the
device name, dtype, head counts and head size, and are reused on the next start unless
`TIERLM_AUTOTUNE_CACHE=0` asks for a fresh tuning (written to `autotune/runs/`, canonical file untouched).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging

import torch

from tierlm.attention.triton_backend import TritonAttentionConfig
from tierlm.kernels.decode_attention import choose_max_splits, decode_attention
from tierlm.kernels.pool_dtype import compute_dtype

logger = logging.getLogger(__name__)
KERNEL = "triton_decode"
CANDIDATES = {"decode_block_n": (64, 128), "decode_num_warps": (4, 8), "decode_num_stages": (2, 3)}


def _time_decode(cfg: TritonAttentionConfig, q, k, v, table, rows, lens, scale, num_sms) -> float:
    import triton

    bs, heads, dim = q.shape
    s = choose_max_splits(bs, k.shape[1], num_sms, waves=cfg.decode_waves)
    mid_o = torch.empty(bs, heads, s, dim, dtype=torch.float32, device=q.device)
    mid_lse = torch.empty(bs, heads, s, dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)

    def run():
        decode_attention(q, k, v, table, rows, lens, out, mid_o, mid_lse, scale, min_chunk=cfg.decode_min_chunk,
                         block_n=cfg.decode_block_n, dot_min_group=cfg.decode_dot_min_group,
                         num_warps=cfg.decode_num_warps, num_stages=cfg.decode_num_stages)
    return triton.testing.do_bench(run, warmup=5, rep=25, return_mode="median")


def tune_decode(base: TritonAttentionConfig, num_heads: int, num_kv_heads: int, head_dim: int,
                dtype: torch.dtype, device: torch.device, batch: int = 64, context: int = 2048,
                kv_dtype: torch.dtype | None = None) -> dict:
    """Time every candidate on random data of the model's shape (K/V in `kv_dtype`, default `dtype`); return
    the fastest parameters."""
    gen = torch.Generator(device=device).manual_seed(0)
    slots = batch * context
    k = torch.randn(slots, num_kv_heads, head_dim, generator=gen, device=device).to(kv_dtype or dtype)
    v = torch.randn(slots, num_kv_heads, head_dim, generator=gen, device=device).to(kv_dtype or dtype)
    q = torch.randn(batch, num_heads, head_dim, generator=gen, device=device).to(dtype)
    table = torch.randperm(slots, generator=gen, device=device).to(torch.int32).view(batch, context)
    rows = torch.arange(batch, dtype=torch.int32, device=device)
    lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    best, best_ms, timings = None, float("inf"), {}
    for values in itertools.product(*CANDIDATES.values()):
        params = dict(zip(CANDIDATES, values))
        ms = _time_decode(dataclasses.replace(base, **params), q, k, v, table, rows, lens, head_dim ** -0.5, sms)
        timings["/".join(map(str, values))] = round(ms * 1e3, 2)
        if ms < best_ms:
            best, best_ms = params, ms
    logger.info("autotune %s: best %s at %.1f us (batch %d, context %d)", KERNEL, best, best_ms * 1e3, batch, context)
    return {**best, "us": round(best_ms * 1e3, 2), "timings_us": timings, "batch": batch, "context": context}


def tuned_config(base: TritonAttentionConfig, num_heads: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device, kv_dtype: torch.dtype | None = None
                 ) -> TritonAttentionConfig:
    """`base` with the decode launch parameters taken from the autotune store (tuning once if missing); K/V in
    `kv_dtype` (the KV cache's, default `dtype`)."""
    from tierlm.cachedir import AutotuneStore

    factors = {"device": torch.cuda.get_device_name(device), "dtype": str(dtype).replace("torch.", ""),
               "num_heads": num_heads, "num_kv_heads": num_kv_heads, "head_dim": head_dim,
               "candidates": {k: list(v) for k, v in CANDIDATES.items()}}
    # an fp8 pool picks its own launch; factors only then, so the model-dtype tunings keep their keys. The
    # type K/V are widened to changes the loop's cost, so it is one of them.
    if kv_dtype is not None and kv_dtype != dtype:
        factors["kv_dtype"] = str(kv_dtype).replace("torch.", "")
        factors["widen"] = str(compute_dtype(dtype, kv_dtype))
    results = AutotuneStore().get_or_tune(
        KERNEL, factors, lambda: tune_decode(base, num_heads, num_kv_heads, head_dim, dtype, device,
                                             kv_dtype=kv_dtype))
    return dataclasses.replace(base, **{k: int(results[k]) for k in CANDIDATES})
