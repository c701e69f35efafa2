"""Which linear runs each weight shape at decode batches of 5-256 rows: cuBLAS or the skinny GEMM with a tuned
launch, per batch bucket.

Tuned once per (device, dtype, weight shape) by `tierlm.kernels.linear_tune` (every launch inside a CUDA graph
with the weights from HBM, checked against cuBLAS, chosen only by `MARGIN` over it, near-ties to the launch
listed first) and kept in the cache root's autotune store (`autotune/skinny_gemm/<fingerprint>.json`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch

from tierlm.kernels.linear_tune import MARGIN, TOLERANCE, LinearKernels, tune_linear
from tierlm.kernels.skinny_gemm import MIN_ROWS, SkinnyConfig, num_counters, skinny_gemm, split_counters
from tierlm.kernels.tune_timing import TIE

KERNEL = "skinny_gemm"
BUCKETS = (8, 16, 32, 64, 128, 256)  # rows are rounded up to one of these (the kernel's batch tile)
CANDIDATES = (SkinnyConfig(64, 128, 1, 4, 4), SkinnyConfig(64, 128, 2, 4, 4), SkinnyConfig(64, 128, 4, 4, 4),
              SkinnyConfig(32, 256, 4, 4, 3), SkinnyConfig(128, 64, 2, 8, 3), SkinnyConfig(128, 128, 1, 8, 3),
              SkinnyConfig(128, 64, 1, 8, 3, block_m=64), SkinnyConfig(64, 128, 2, 4, 4, block_m=64),
              # the fastest of a wider sweep at 128-256 rows (benchmarks/bench_skinny_sweep.py)
              SkinnyConfig(64, 128, 1, 4, 4, block_m=64), SkinnyConfig(128, 128, 1, 8, 4, block_m=64),
              SkinnyConfig(128, 64, 1, 8, 4, block_m=128), SkinnyConfig(64, 128, 4, 4, 4, block_m=64))


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
    """The launch per rows bucket (None: cuBLAS) of one weight shape on one device, with the split counters its
    split launches share: as many as the most any of them uses; every launch leaves them zeroed, and launches
    on one stream never overlap theirs."""

    configs: Mapping[int, Optional[SkinnyConfig]]
    counters: Optional[torch.Tensor]

    def config_for(self, rows: int) -> Optional[SkinnyConfig]:
        return self.configs.get(bucket_of(rows))


def _kernels(n: int, device: torch.device) -> LinearKernels:
    """The skinny GEMM for `linear_tune`, each launch with split counters of its own."""
    counters: dict = {}

    def c_of(cfg: SkinnyConfig) -> Optional[torch.Tensor]:
        if cfg not in counters:
            counters[cfg] = split_counters(n, cfg, device)
        return counters[cfg]

    return LinearKernels(plain=lambda x, w, c: skinny_gemm(x, w, None, c, c_of(c)))


def tune_skinny(n: int, k: int, dtype: torch.dtype, device: torch.device) -> Dict[str, object]:
    """The plan of an `n x k` weight, timed now (see `linear_tune.tune_linear`); a batch tile as large as the
    bucket is the launch without one, so it is not timed again. Every path is timed after an RMSNorm: in a
    decode step each linear follows a short PDL-launched kernel (a norm, the SiLU·mul, or attention)."""
    return tune_linear(KERNEL, n, k, ("plain",), dtype, device, BUCKETS, CANDIDATES, _kernels(n, device),
                       skip=lambda cfg, rows: cfg.block_m >= rows, after_norm=True)


def _fields(config: SkinnyConfig) -> tuple:
    """A candidate as the store's key spells it: a launch without `tma` keeps the tuple it had before that
    field existed, so plans tuned then are still found."""
    fields = dataclasses.astuple(config)
    return fields if config.tma else fields[:-1]


def tuned_skinny_plan(n: int, k: int, dtype: torch.dtype, device: torch.device) -> SkinnyPlan:
    """The plan of an `n x k` weight from the autotune store (tuned once if missing)."""
    from tierlm.cachedir import AutotuneStore

    factors = {"device": torch.cuda.get_device_name(device), "dtype": str(dtype).replace("torch.", ""),
               "n": n, "k": k, "buckets": list(BUCKETS), "candidates": [_fields(c) for c in CANDIDATES],
               "margin": MARGIN, "checked": TOLERANCE, "reference": "cuBLAS", "timed_after": "rmsnorm",
               "tie": TIE}
    results = AutotuneStore().get_or_tune(KERNEL, factors, lambda: tune_skinny(n, k, dtype, device))
    configs = {int(rows): (SkinnyConfig(**cfg) if cfg else None) for rows, cfg in results["plan"]["plain"].items()}
    chosen = [c for c in configs.values() if c is not None and c.split_k > 1]
    counters = split_counters(n, max(chosen, key=lambda c: num_counters(n, c)), device) if chosen else None
    return SkinnyPlan(configs, counters)
