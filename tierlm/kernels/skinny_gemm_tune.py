"""Which linear runs each weight shape at decode batches of 5-256 rows: cuBLAS or the skinny GEMM with a tuned
launch, per batch bucket.

Tuned once per (device, dtype, weight shape) by `tierlm.kernels.linear_tune` (every launch inside a CUDA graph
with the weights from HBM, checked against cuBLAS, chosen only by `MARGIN` over it, near-ties to the launch
listed first) and kept in the cache root's autotune store (`autotune/skinny_gemm/<fingerprint>.json`). A
`[gate | up]` projection is also tuned with its SiLU·mul as the epilogue ("silu_mul_out",
`skinny_gemm_silu_mul`), chosen only where it beats the projection and the SiLU·mul apart.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence

import torch

from tierlm.kernels.linear_tune import MARGIN, TOLERANCE, LinearKernels, tune_linear
from tierlm.kernels.skinny_gemm import (MIN_ROWS, SkinnyConfig, num_counters, skinny_gemm, skinny_gemm_silu_mul,
                                        split_counters)
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
    """The launch per rows bucket (None: cuBLAS) of one weight shape on one device, and per bucket the launch
    with the SiLU·mul epilogue (`silu_mul_out`; empty unless the layer is a `[gate | up]` projection that asked
    for it, None where the projection and the SiLU·mul apart are faster), with the split counters their split
    launches share: as many as the most any of them uses; every launch leaves them zeroed, and launches on one
    stream never overlap theirs."""

    configs: Mapping[int, Optional[SkinnyConfig]]
    counters: Optional[torch.Tensor]
    silu_mul_out: Mapping[int, Optional[SkinnyConfig]] = field(default_factory=dict)

    def config_for(self, rows: int) -> Optional[SkinnyConfig]:
        return self.configs.get(bucket_of(rows))

    def silu_mul_config_for(self, rows: int) -> Optional[SkinnyConfig]:
        """The launch that computes `silu(gate) * up` of this layer's output for `rows` rows, or None."""
        return self.silu_mul_out.get(bucket_of(rows))


def _kernels(n: int, device: torch.device) -> LinearKernels:
    """The skinny GEMM for `linear_tune`, each launch with split counters of its own."""
    counters: dict = {}

    def c_of(cfg: SkinnyConfig, outputs: int = n) -> Optional[torch.Tensor]:
        if (cfg, outputs) not in counters:
            counters[cfg, outputs] = split_counters(outputs, cfg, device)
        return counters[cfg, outputs]

    return LinearKernels(plain=lambda x, w, c: skinny_gemm(x, w, None, c, c_of(c)),
                         silu_mul_out=lambda x, w, c: skinny_gemm_silu_mul(x, w, None, c, c_of(c, n // 2)))


def tune_skinny(n: int, k: int, dtype: torch.dtype, device: torch.device,
                epilogues: Sequence[str] = ()) -> Dict[str, object]:
    """The plan of an `n x k` weight, timed now (see `linear_tune.tune_linear`), with each of `epilogues`
    ("silu_mul_out"); a batch tile as large as the bucket is the launch without one, so it is not timed
    again. Every path is timed after an RMSNorm: in a decode step each linear follows a short PDL-launched
    kernel (a norm, the SiLU·mul, or attention)."""
    return tune_linear(KERNEL, n, k, ("plain", *epilogues), dtype, device, BUCKETS, CANDIDATES,
                       _kernels(n, device), skip=lambda cfg, rows: cfg.block_m >= rows, after_norm=True)


def _fields(config: SkinnyConfig) -> tuple:
    """A candidate as the store's key spells it: a launch without `tma` keeps the tuple it had before that
    field existed, so plans tuned then are still found."""
    fields = dataclasses.astuple(config)
    return fields if config.tma else fields[:-1]


def tuned_skinny_plan(n: int, k: int, dtype: torch.dtype, device: torch.device,
                      epilogues: Sequence[str] = ()) -> SkinnyPlan:
    """The plan of an `n x k` weight, with `epilogues` ("silu_mul_out" for a `[gate | up]` projection), from the
    autotune store (tuned once if missing)."""
    from tierlm.cachedir import AutotuneStore

    unknown = set(epilogues) - {"silu_mul_out"}
    if unknown or (epilogues and n % 2):
        raise ValueError(f"skinny gemm plan: epilogues {sorted(epilogues)} for a {n}-row weight (known: "
                         f"silu_mul_out, on an even number of rows)")
    factors = {"device": torch.cuda.get_device_name(device), "dtype": str(dtype).replace("torch.", ""),
               "n": n, "k": k, "buckets": list(BUCKETS), "candidates": [_fields(c) for c in CANDIDATES],
               "margin": MARGIN, "checked": TOLERANCE, "reference": "cuBLAS", "timed_after": "rmsnorm",
               "tie": TIE}
    if epilogues:  # only where asked for, so the plain plans of every other shape keep their key
        factors["epilogues"] = sorted(epilogues)
    results = AutotuneStore().get_or_tune(KERNEL, factors, lambda: tune_skinny(n, k, dtype, device,
                                                                              sorted(epilogues)))

    def launches(kind: str) -> dict:
        return {int(rows): (SkinnyConfig(**cfg) if cfg else None)
                for rows, cfg in results["plan"].get(kind, {}).items()}

    configs, fused = launches("plain"), launches("silu_mul_out")
    split = [(outputs, c) for outputs, launches_of in ((n, configs), (n // 2, fused))
             for c in launches_of.values() if c is not None and c.split_k > 1]
    counters = split_counters(*max(split, key=lambda s: num_counters(*s)), device) if split else None
    return SkinnyPlan(configs, counters, fused)
