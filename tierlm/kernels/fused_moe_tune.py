"""Persistent autotuning of the fused MoE kernel's launch parameters, per device, shape and token-count bucket.

Results live in the cache root's autotune store (`autotune/fused_moe/<fingerprint>.json`, one file per bucket),
keyed by the device name, dtype, expert count, hidden and intermediate sizes, top-k and the bucket, and are
reused on the next start unless `TIERLM_AUTOTUNE_CACHE=0` asks for a fresh tuning (written to
`autotune/runs/`, canonical file untouched).
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import logging
from collections.abc import Mapping

import torch

from tierlm.kernels.fused_moe import MoEConfig, fused_moe
from tierlm.kernels.prebuild import prebuild

logger = logging.getLogger(__name__)
KERNEL = "fused_moe"
# token counts tuned for; a batch uses the config of the smallest bucket holding it (the largest beyond)
BUCKETS = (1, 16, 64, 256, 1024, 4096)
CANDIDATES = (
    MoEConfig(block_m=16, block_n=64, block_k=64, group_m=1, num_warps=4, num_stages=3),
    MoEConfig(block_m=16, block_n=128, block_k=128, group_m=1, num_warps=4, num_stages=3),
    MoEConfig(block_m=32, block_n=64, block_k=64, group_m=8, num_warps=4, num_stages=4),
    MoEConfig(block_m=64, block_n=64, block_k=64, group_m=8, num_warps=4, num_stages=3),
    MoEConfig(block_m=64, block_n=128, block_k=64, group_m=8, num_warps=8, num_stages=3),
    MoEConfig(block_m=128, block_n=128, block_k=64, group_m=8, num_warps=8, num_stages=3),
)


def bucket_of(num_tokens: int) -> int:
    """The tuned bucket whose config serves a batch of `num_tokens` tokens."""
    return BUCKETS[min(bisect.bisect_left(BUCKETS, num_tokens), len(BUCKETS) - 1)]


def default_config(num_tokens: int) -> MoEConfig:
    """Untuned choice: small row blocks for decode batches (few pairs per expert), larger ones for prefill."""
    return CANDIDATES[0] if num_tokens <= 64 else CANDIDATES[3]


def _bench(fn) -> float:
    import triton

    return triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")


def tune_fused_moe(num_experts: int, hidden: int, inter: int, top_k: int, tokens: int, dtype: torch.dtype,
                   device: torch.device) -> dict:
    """Time every candidate on random data of the layer's shape (their kernels built side by side first,
    `kernels.prebuild`); return the fastest parameters."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(tokens, hidden, generator=gen, device=device).to(dtype)
    gate_up = (torch.randn(num_experts, 2 * inter, hidden, generator=gen, device=device) * 0.02).to(dtype)
    down = (torch.randn(num_experts, hidden, inter, generator=gen, device=device) * 0.02).to(dtype)
    logits = torch.randn(tokens, num_experts, generator=gen, device=device)
    weights, ids = torch.topk(torch.softmax(logits, dim=-1), top_k, dim=-1)
    weights = weights.to(dtype)
    best, best_ms, timings = None, float("inf"), {}
    prebuild([functools.partial(fused_moe, x, gate_up, down, weights, ids, cfg) for cfg in CANDIDATES], device)
    for cfg in CANDIDATES:
        name = "/".join(str(v) for v in dataclasses.astuple(cfg))
        try:
            ms = _bench(lambda cfg=cfg: fused_moe(x, gate_up, down, weights, ids, cfg))
        except Exception as e:  # noqa: BLE001 - e.g. out of shared memory for this dtype: not a candidate here
            logger.debug("autotune %s: %s does not run here: %s", KERNEL, name, e)
            timings[name] = None
            continue
        timings[name] = round(ms * 1e3, 2)
        if ms < best_ms:
            best, best_ms = cfg, ms
    if best is None:
        raise RuntimeError(f"no {KERNEL} launch configuration runs on this device for this shape and dtype")
    logger.info("autotune %s: best %s at %.1f us (%d tokens)", KERNEL, best, best_ms * 1e3, tokens)
    return {**dataclasses.asdict(best), "us": round(best_ms * 1e3, 2), "timings_us": timings, "tokens": tokens}


def tuned_configs(num_experts: int, hidden: int, inter: int, top_k: int, dtype: torch.dtype,
                  device: torch.device) -> Mapping[int, MoEConfig]:
    """Config per token-count bucket from the autotune store (tuning the missing buckets once each)."""
    from tierlm.cachedir import AutotuneStore

    store = AutotuneStore()
    fields = [f.name for f in dataclasses.fields(MoEConfig)]
    table = {}
    for bucket in BUCKETS:
        factors = {"device": torch.cuda.get_device_name(device), "dtype": str(dtype).replace("torch.", ""),
                   "num_experts": num_experts, "hidden": hidden, "inter": inter, "top_k": top_k,
                   "tokens": bucket, "candidates": [dataclasses.astuple(c) for c in CANDIDATES]}
        results = store.get_or_tune(
            KERNEL, factors,
            lambda bucket=bucket: tune_fused_moe(num_experts, hidden, inter, top_k, bucket, dtype, device))
        table[bucket] = MoEConfig(**{k: int(results[k]) for k in fields})
    return table
