"""Which linear runs each weight shape at decode batches of 5-256 rows: cuBLAS or `skinny_gemm` with a tuned
launch, per batch bucket.

Tuned once per (device, dtype, weight shape) and kept in the cache root's autotune store
(`autotune/skinny_gemm/<fingerprint>.json`), timed as `tierlm.kernels.gemv_tune` times (inside a CUDA graph,
weights from HBM). A bucket keeps cuBLAS unless a launch beats it by `MARGIN`; a launch whose result is not
cuBLAS's to the dtype's rounding is not a candidate.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F

from tierlm.kernels.gemv_tune import MARGIN, check_close, graph_time_us, weight_copies
from tierlm.kernels.skinny_gemm import MIN_ROWS, SkinnyConfig, num_counters, skinny_gemm, split_counters

logger = logging.getLogger(__name__)
KERNEL = "skinny_gemm"
BUCKETS = (8, 16, 32, 64, 128, 256)  # rows are rounded up to one of these (the kernel's batch tile)
CANDIDATES = (SkinnyConfig(64, 128, 1, 4, 4), SkinnyConfig(64, 128, 2, 4, 4), SkinnyConfig(64, 128, 4, 4, 4),
              SkinnyConfig(32, 256, 4, 4, 3), SkinnyConfig(128, 64, 2, 8, 3), SkinnyConfig(128, 128, 1, 8, 3),
              SkinnyConfig(64, 128, 1, 4, 4, True), SkinnyConfig(64, 128, 2, 4, 4, True),
              SkinnyConfig(128, 64, 1, 8, 3, block_m=64), SkinnyConfig(64, 128, 2, 4, 4, block_m=64))


def bucket_of(rows: int) -> int:
    """The bucket whose plan serves `rows` rows (0 outside the kernel's range: another path)."""
    if rows < MIN_ROWS:
        return 0
    for b in BUCKETS:
        if rows <= b:
            return b
    return 0


@dataclass(frozen=True)
class SkinnyPlan:
    """The launch per rows bucket (None: cuBLAS) of one weight shape on one device, with the split counters
    its split launches share: as many as the most any of them uses; every launch leaves them zeroed, and
    launches on one stream never overlap theirs."""

    configs: Mapping[int, Optional[SkinnyConfig]]
    counters: Optional[torch.Tensor]

    def config_for(self, rows: int) -> Optional[SkinnyConfig]:
        return self.configs.get(bucket_of(rows))


def tune_skinny(n: int, k: int, dtype: torch.dtype, device: torch.device) -> Dict[str, object]:
    """Time cuBLAS and every candidate per rows bucket; the winners (None where cuBLAS stays)."""
    gen = torch.Generator(device=device).manual_seed(0)
    ws, copies = weight_copies(n, k, dtype, device, gen)
    plan: dict = {}
    timings = {}
    for rows in BUCKETS:
        x = torch.randn(rows, k, generator=gen, device=device).to(dtype)
        ref = F.linear(x, ws[0])
        best_us = graph_time_us(lambda i: F.linear(x, ws[i]), copies)
        timings[f"{rows}/torch"] = round(best_us, 2)
        best_us *= MARGIN
        plan[str(rows)] = None
        for cfg in CANDIDATES:
            if cfg.block_m >= rows:  # the same launch as without a batch tile
                continue
            counters = split_counters(n, cfg, device)
            try:
                check_close(skinny_gemm(x, ws[0], None, cfg, counters), ref)
                us = graph_time_us(lambda i, cfg=cfg, c=counters: skinny_gemm(x, ws[i], None, cfg, c), copies)
            except Exception as e:  # noqa: BLE001 - a launch this GPU cannot build or run right is no candidate
                logger.warning("skinny gemm %dx%d %s rows %d: not timed (%s)", n, k, cfg.label(), rows, e)
                continue
            timings[f"{rows}/{cfg.label()}"] = round(us, 2)
            if us < best_us:
                best_us, plan[str(rows)] = us, dataclasses.asdict(cfg)
    del ws
    logger.info("autotune %s %dx%d: %s", KERNEL, n, k,
                {r: (SkinnyConfig(**c).label() if c else "torch") for r, c in plan.items()})
    return {"plan": plan, "timings_us": timings}


def tuned_skinny_plan(n: int, k: int, dtype: torch.dtype, device: torch.device) -> SkinnyPlan:
    """The plan of an `n x k` weight from the autotune store (tuned once if missing)."""
    from tierlm.cachedir import AutotuneStore

    factors = {"device": torch.cuda.get_device_name(device), "dtype": str(dtype).replace("torch.", ""),
               "n": n, "k": k, "buckets": list(BUCKETS), "candidates": [dataclasses.astuple(c) for c in CANDIDATES],
               "margin": MARGIN}
    results = AutotuneStore().get_or_tune(KERNEL, factors, lambda: tune_skinny(n, k, dtype, device))
    configs = {int(rows): (SkinnyConfig(**cfg) if cfg else None) for rows, cfg in results["plan"].items()}
    chosen = [c for c in configs.values() if c is not None and c.split_k > 1]
    counters = split_counters(n, max(chosen, key=lambda c: num_counters(n, c)), device) if chosen else None
    return SkinnyPlan(configs, counters)
