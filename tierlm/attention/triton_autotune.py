"""Persistent autotuning of the Triton decode kernel's launch parameters, per device and model shape.

Results live in the cache root's autotune store (`autotune/triton_decode/<fingerprint>.json`), keyed by the
device name, dtype, head counts and head size, and are reused on the next start unless
`TIERLM_AUTOTUNE_CACHE=0` asks for a fresh tuning (written to `autotune/runs/`, canonical file untouched).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math

import torch

from tierlm.attention.triton_backend import TritonAttentionConfig
from tierlm.kernels.decode_attention import choose_max_splits, decode_attention, merge_counters

logger = logging.getLogger(__name__)
KERNEL = "triton_decode"
CANDIDATES = {"decode_block_n": (64, 128), "decode_num_warps": (4, 8), "decode_num_stages": (2, 3)}
MERGE_BATCH = 8  # the fused merge is timed at a small batch: where stage 2 is a launch worth saving
MERGE_MARGIN = 0.97  # and chosen only if it takes at most this fraction of the two-stage launch's time


def _random_batch(batch: int, context: int, num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                  device: torch.device, spread: bool = False) -> tuple:
    """(q, k, v, request table, rows, lengths) of `batch` requests of `context` tokens in random slots (with
    `spread`, of 1 to `context` tokens: requests with fewer splits than the launch has programs for)."""
    gen = torch.Generator(device=device).manual_seed(0)
    slots = batch * context
    k = torch.randn(slots, num_kv_heads, head_dim, generator=gen, device=device).to(dtype)
    v = torch.randn(slots, num_kv_heads, head_dim, generator=gen, device=device).to(dtype)
    q = torch.randn(batch, num_heads, head_dim, generator=gen, device=device).to(dtype)
    table = torch.randperm(slots, generator=gen, device=device).to(torch.int32).view(batch, context)
    rows = torch.arange(batch, dtype=torch.int32, device=device)
    lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    if spread:
        lens = torch.randint(1, context + 1, (batch,), generator=gen, device=device).to(torch.int32)
    return q, k, v, table, rows, lens


def _decode_fn(cfg: TritonAttentionConfig, data: tuple, num_sms: int):
    """A closure running one decode launch of `cfg` on `data`, and its output tensor."""
    q, k, v, table, rows, lens = data
    bs, heads, dim = q.shape
    s = choose_max_splits(bs, k.shape[1], num_sms, waves=cfg.decode_waves)
    mid_o = torch.empty(bs, heads, s, dim, dtype=torch.float32, device=q.device)
    mid_lse = torch.empty(bs, heads, s, dtype=torch.float32, device=q.device)
    counters = (torch.zeros(merge_counters(bs, heads), dtype=torch.int32, device=q.device)
                if cfg.decode_fused_merge else None)
    out = torch.empty_like(q)

    def run():
        decode_attention(q, k, v, table, rows, lens, out, mid_o, mid_lse, dim ** -0.5, min_chunk=cfg.decode_min_chunk,
                         block_n=cfg.decode_block_n, dot_min_group=cfg.decode_dot_min_group,
                         num_warps=cfg.decode_num_warps, num_stages=cfg.decode_num_stages, counters=counters)
    return run, out


def choose_merge(two_stage_us: float, merged_us: float, max_diff: float, tolerance: float) -> bool:
    """The fused merge only where its result is the two-stage launch's (to `tolerance`) and it is faster by
    `MERGE_MARGIN`."""
    return max_diff <= tolerance and merged_us <= MERGE_MARGIN * two_stage_us


def _time_merge(cfg: TritonAttentionConfig, data: tuple, num_sms: int) -> dict:
    """Both ways at a small batch, replayed from CUDA graphs; whether the fused merge is chosen."""
    import triton

    timed = {}
    for merge in (False, True):
        run, out = _decode_fn(dataclasses.replace(cfg, decode_fused_merge=merge), data, num_sms)
        outs = []
        for _ in range(3):  # the merged result must be the same every time, not only close once
            run()
            outs.append(out.float().clone())
        timed[merge] = (triton.testing.do_bench_cudagraph(run, return_mode="median") * 1e3, outs)
    ref, merged = timed[False][1][0], timed[True][1]
    diff = max((o - ref).abs().max().item() for o in merged)
    if not all(torch.equal(o, merged[0]) for o in merged):
        diff = float("inf")  # a merge whose result depends on which program finished last is never chosen
    tol = 0.02 * ref.abs().max().item()
    fused = choose_merge(timed[False][0], timed[True][0], diff, tol)
    return {"decode_fused_merge": fused, "merge_us": [round(timed[False][0], 2), round(timed[True][0], 2)],
            "merge_max_diff": diff if math.isfinite(diff) else None}


def tune_decode(base: TritonAttentionConfig, num_heads: int, num_kv_heads: int, head_dim: int,
                dtype: torch.dtype, device: torch.device, batch: int = 64, context: int = 2048) -> dict:
    """Time every candidate on random data of the model's shape and return the fastest parameters; then
    whether stage 1 should merge the splits itself (`_time_merge`, at `MERGE_BATCH` requests)."""
    import triton

    data = _random_batch(batch, context, num_heads, num_kv_heads, head_dim, dtype, device)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    best, best_ms, timings = None, float("inf"), {}
    for values in itertools.product(*CANDIDATES.values()):
        params = dict(zip(CANDIDATES, values))
        run, _ = _decode_fn(dataclasses.replace(base, **params), data, sms)
        ms = triton.testing.do_bench(run, warmup=5, rep=25, return_mode="median")
        timings["/".join(map(str, values))] = round(ms * 1e3, 2)
        if ms < best_ms:
            best, best_ms = params, ms
    del data
    small = _random_batch(MERGE_BATCH, context, num_heads, num_kv_heads, head_dim, dtype, device, spread=True)
    merge = _time_merge(dataclasses.replace(base, **best), small, sms)
    logger.info("autotune %s: best %s at %.1f us (batch %d, context %d); fused merge %s (%s us at batch %d)",
                KERNEL, best, best_ms * 1e3, batch, context, merge["decode_fused_merge"], merge["merge_us"],
                MERGE_BATCH)
    return {**best, **merge, "us": round(best_ms * 1e3, 2), "timings_us": timings, "batch": batch,
            "context": context}


def tuned_config(base: TritonAttentionConfig, num_heads: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> TritonAttentionConfig:
    """`base` with the decode launch parameters taken from the autotune store (tuning once if missing)."""
    from tierlm.cachedir import AutotuneStore

    factors = {"device": torch.cuda.get_device_name(device), "dtype": str(dtype).replace("torch.", ""),
               "num_heads": num_heads, "num_kv_heads": num_kv_heads, "head_dim": head_dim,
               "candidates": {k: list(v) for k, v in CANDIDATES.items()},
               "fused_merge": {"batch": MERGE_BATCH, "margin": MERGE_MARGIN}}
    results = AutotuneStore().get_or_tune(
        KERNEL, factors, lambda: tune_decode(base, num_heads, num_kv_heads, head_dim, dtype, device))
    return dataclasses.replace(base, **{k: int(results[k]) for k in CANDIDATES},
                               decode_fused_merge=bool(results.get("decode_fused_merge", False)))
