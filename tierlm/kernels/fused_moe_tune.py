"""Persistent autotuning of the fused MoE kernel's launch parameters, per device, shape and token-count bucket.

Results live in the cache root's autotune store (`autotune/fused_moe/<fingerprint>.json`, one file per bucket),
keyed by the device name, dtype, expert count, hidden and intermediate sizes, top-k and the bucket, and are
reused on the next start unless `TIERLM_AUTOTUNE_CACHE=0` asks for a fresh tuning (written to
`autotune/runs/`, canonical file untouched).

Each launch is timed replayed from a CUDA graph (`tune_timing.graph_time_us`), as decode steps run the layer,
cycling through `ROUTINGS` random routings so that one call's experts are not the next one's. Timed eagerly, the
host's dozen launches per call are most of a small batch's time and the pick says nothing of the device's.
Launches within `TIE` of the fastest go to the one listed first. Buckets of up to `PAIRS_UP_TO` tokens also
time the pair-at-a-time launches (`moe_pairs`), which read an expert once per token that chose it and so lose
at larger batches by far.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import logging
from collections.abc import Mapping

import torch

from tierlm.kernels.fused_moe import PAIRS, MoEConfig, fused_moe
from tierlm.kernels.prebuild import prebuild
from tierlm.kernels.tune_timing import TIE, choose, graph_time_us

logger = logging.getLogger(__name__)
KERNEL = "fused_moe"
# token counts tuned for; a batch uses the config of the smallest bucket holding it (the largest beyond)
BUCKETS = (1, 2, 4, 8, 16, 64, 256, 1024, 4096)
ROUTINGS = 4  # inputs cycled through by the timed calls, each routed at random
CANDIDATES = (
    MoEConfig(block_m=16, block_n=64, block_k=64, group_m=1, num_warps=4, num_stages=3),
    MoEConfig(block_m=16, block_n=128, block_k=128, group_m=1, num_warps=4, num_stages=3),
    MoEConfig(block_m=32, block_n=64, block_k=64, group_m=8, num_warps=4, num_stages=4),
    MoEConfig(block_m=64, block_n=64, block_k=64, group_m=8, num_warps=4, num_stages=3),
    MoEConfig(block_m=64, block_n=128, block_k=64, group_m=8, num_warps=8, num_stages=3),
    MoEConfig(block_m=128, block_n=128, block_k=64, group_m=8, num_warps=8, num_stages=3),
)
PAIR_CANDIDATES = (
    MoEConfig(block_m=PAIRS, block_n=4, block_k=1024, group_m=1, num_warps=4, num_stages=1),
    MoEConfig(block_m=PAIRS, block_n=8, block_k=512, group_m=1, num_warps=4, num_stages=1),
    MoEConfig(block_m=PAIRS, block_n=16, block_k=256, group_m=1, num_warps=4, num_stages=1),
    MoEConfig(block_m=PAIRS, block_n=8, block_k=1024, group_m=1, num_warps=8, num_stages=1),
)
PAIRS_UP_TO = 8


def candidates(num_tokens: int) -> tuple[MoEConfig, ...]:
    """The launches timed for a bucket of `num_tokens` tokens: the grouped ones, and for a few tokens the
    pair-at-a-time ones after them."""
    return CANDIDATES + PAIR_CANDIDATES if num_tokens <= PAIRS_UP_TO else CANDIDATES


def bucket_of(num_tokens: int) -> int:
    """The tuned bucket whose config serves a batch of `num_tokens` tokens."""
    return BUCKETS[min(bisect.bisect_left(BUCKETS, num_tokens), len(BUCKETS) - 1)]


def default_config(num_tokens: int) -> MoEConfig:
    """Untuned choice: small row blocks for decode batches (few pairs per expert), larger ones for prefill."""
    return CANDIDATES[0] if num_tokens <= 64 else CANDIDATES[3]


def launch_name(cfg: MoEConfig) -> str:
    """A launch as the tuning results name it (`block_m/block_n/block_k/group_m/num_warps/num_stages`)."""
    return "/".join(str(v) for v in dataclasses.astuple(cfg))


def config_of(result: Mapping) -> MoEConfig:
    """The launch a tuning result (`tune_fused_moe`'s dict) names."""
    return MoEConfig(**{f.name: int(result[f.name]) for f in dataclasses.fields(MoEConfig)})


def random_layer(num_experts: int, hidden: int, inter: int, top_k: int, tokens: int, dtype: torch.dtype,
                 device: torch.device, routings: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Random expert weights of the layer's shape and `routings` inputs `(x, weights, ids)` of `tokens` tokens,
    each routed at random."""
    gen = torch.Generator(device=device).manual_seed(seed)
    gate_up = (torch.randn(num_experts, 2 * inter, hidden, generator=gen, device=device) * 0.02).to(dtype)
    down = (torch.randn(num_experts, hidden, inter, generator=gen, device=device) * 0.02).to(dtype)
    inputs = []
    for _ in range(routings):
        x = torch.randn(tokens, hidden, generator=gen, device=device).to(dtype)
        logits = torch.randn(tokens, num_experts, generator=gen, device=device)
        weights, ids = torch.topk(torch.softmax(logits, dim=-1), top_k, dim=-1)
        inputs.append((x, weights.to(dtype), ids))
    return gate_up, down, inputs


def tune_fused_moe(num_experts: int, hidden: int, inter: int, top_k: int, tokens: int, dtype: torch.dtype,
                   device: torch.device) -> dict:
    """Time every candidate of the bucket (`candidates`) on random data of the layer's shape (their kernels built
    side by side first, `kernels.prebuild`); return the launch `tune_timing.choose` picks, with every candidate's
    time."""
    gate_up, down, inputs = random_layer(num_experts, hidden, inter, top_k, tokens, dtype, device, ROUTINGS)

    def call(cfg: MoEConfig, i: int) -> torch.Tensor:
        x, weights, ids = inputs[i]
        return fused_moe(x, gate_up, down, weights, ids, cfg)

    listed = candidates(tokens)
    prebuild([functools.partial(call, cfg, 0) for cfg in listed], device)
    timed, timings = [], {}
    for cfg in listed:
        name = launch_name(cfg)
        try:
            us = graph_time_us(functools.partial(call, cfg), ROUTINGS)
        except Exception as e:  # noqa: BLE001 - e.g. out of shared memory for this dtype: not a candidate here
            logger.debug("autotune %s: %s does not run here: %s", KERNEL, name, e)
            timings[name] = None
            continue
        timings[name] = round(us, 2)
        timed.append((cfg, us))
    best = choose(timed)
    if best is None:
        raise RuntimeError(f"no {KERNEL} launch configuration runs on this device for this shape and dtype")
    best_us = next(us for cfg, us in timed if cfg is best)
    logger.info("autotune %s: %s at %.1f us (%d tokens)", KERNEL, best, best_us, tokens)
    return {**dataclasses.asdict(best), "us": round(best_us, 2), "timings_us": timings, "tokens": tokens}


def tuned_configs(num_experts: int, hidden: int, inter: int, top_k: int, dtype: torch.dtype,
                  device: torch.device) -> Mapping[int, MoEConfig]:
    """Config per token-count bucket from the autotune store (tuning the missing buckets once each)."""
    from tierlm.cachedir import AutotuneStore

    store = AutotuneStore()
    table = {}
    for bucket in BUCKETS:
        factors = {"device": torch.cuda.get_device_name(device), "dtype": str(dtype).replace("torch.", ""),
                   "num_experts": num_experts, "hidden": hidden, "inter": inter, "top_k": top_k,
                   "tokens": bucket, "candidates": [dataclasses.astuple(c) for c in candidates(bucket)],
                   "timed": f"cuda graph, {ROUTINGS} routings", "tie": TIE}
        results = store.get_or_tune(
            KERNEL, factors,
            lambda bucket=bucket: tune_fused_moe(num_experts, hidden, inter, top_k, bucket, dtype, device))
        table[bucket] = config_of(results)
    return table
