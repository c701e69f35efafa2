"""Choosing, once per weight shape, which kernel a decode-time linear layer runs: shared by the GEMV (1-4 rows,
`gemv_tune`) and the skinny GEMM (5-256 rows, `skinny_gemm_tune`).

Every path is timed inside a CUDA graph, as decode steps run it, cycling through enough weight copies that the
weights come from HBM and not from L2. Per prologue (nothing, the RMSNorm before the layer, or the SiLU·mul of
`[gate | up]`) and rows bucket a launch is chosen only where it beats by `MARGIN` every path the layer would
otherwise run: the prologue then cuBLAS, and the prologue then the kernel with the "plain" plan's launch for
those rows (so "plain" is tuned first). A launch whose result is not the torch path's (`check_close`) is
never timed, so a kernel that builds but computes something else on some GPU is never chosen. Launches within
`TIE` of the fastest are one tie, which the one listed first among the candidates wins (`tune_timing`).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F

from tierlm.kernels.prebuild import prebuild
from tierlm.kernels.tune_timing import choose, graph_time_us

logger = logging.getLogger(__name__)
MARGIN = 0.97  # a launch must take at most this fraction of the faster unfused path's time
TOLERANCE = 0.02  # of the reference's largest output: a launch further from it than 16-bit rounding is no candidate
EPS = 1e-6  # the RMSNorm epsilon of the timed inputs
_WEIGHT_BYTES = 160 << 20  # over three times the L2 of current data-centre GPUs


def check_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    """Raise unless `out` is `ref` to within `TOLERANCE` of ref's largest magnitude."""
    out, ref = out.float(), ref.float()
    err, tol = (out - ref).abs().max().item(), TOLERANCE * ref.abs().max().item()
    if not err <= tol:  # NaN fails too
        raise RuntimeError(f"differs from the torch path by {err:.3g} (tolerance {tol:.3g})")


def weight_copies(n: int, k: int, dtype: torch.dtype, device: torch.device,
                  gen: torch.Generator) -> tuple[list, int]:
    """Enough random `n x k` weights that cycling through them reads each from HBM, not from L2."""
    copies = max(1, -(-_WEIGHT_BYTES // (n * k * torch.finfo(dtype).bits // 8)))
    return [(torch.randn(n, k, generator=gen, device=device) * 0.02).to(dtype) for _ in range(copies)], copies


@dataclass(frozen=True)
class LinearKernels:
    """The kernel under tuning, as functions of `(inputs..., weight, launch)`: `plain(x, w, c)` and, for a
    kernel that fuses them, `rmsnorm(x, residual, norm_weight, w, c)` (norm epsilon `EPS`) and
    `silu_mul(gate_up, w, c)`."""

    plain: Callable[..., torch.Tensor]
    rmsnorm: Optional[Callable[..., torch.Tensor]] = None
    silu_mul: Optional[Callable[..., torch.Tensor]] = None


def prologue_paths(prologue: str, rows: int, k: int, gen: torch.Generator, dtype: torch.dtype,
                   device: torch.device, kernels: LinearKernels, after_norm: bool = False):
    """(the unfused torch path, the kernel with a launch, the unfused prologue then the plain kernel or None
    for "plain") as functions of (weight, launch) on random inputs of `rows` rows. `after_norm`: "plain"
    paths take their input from an RMSNorm launched just before, as a decode step runs them (see
    `tune_linear`)."""
    from tierlm.kernels.fused import rmsnorm, silu_mul

    if prologue != "plain" and getattr(kernels, prologue, None) is None:
        raise ValueError(f"the kernel under tuning has no {prologue!r} prologue")

    def rand(*shape):
        return torch.randn(*shape, generator=gen, device=device).to(dtype)

    if prologue == "rmsnorm":
        x, res, nw = rand(rows, k), rand(rows, k), rand(k)
        return (lambda w, c: F.linear(rmsnorm(x, nw, EPS, res)[0], w),
                lambda w, c: kernels.rmsnorm(x, res, nw, w, c),
                lambda w, c: kernels.plain(rmsnorm(x, nw, EPS, res)[0], w, c))
    if prologue == "silu_mul":
        gu = rand(rows, 2 * k)
        return (lambda w, c: F.linear(silu_mul(gu), w), lambda w, c: kernels.silu_mul(gu, w, c),
                lambda w, c: kernels.plain(silu_mul(gu), w, c))
    x = rand(rows, k)
    if after_norm:
        nw = rand(k)
        return (lambda w, c: F.linear(rmsnorm(x, nw, EPS)[0], w),
                lambda w, c: kernels.plain(rmsnorm(x, nw, EPS)[0], w, c), None)
    return lambda w, c: F.linear(x, w), lambda w, c: kernels.plain(x, w, c), None


def tune_linear(name: str, n: int, k: int, prologues: Iterable[str], dtype: torch.dtype, device: torch.device,
                buckets: Sequence[int], candidates: Sequence[Any], kernels: LinearKernels,
                skip: Callable[[Any, int], bool] = lambda cfg, rows: False,
                after_norm: bool = False) -> Dict[str, object]:
    """Time the unfused paths and every candidate launch (a frozen dataclass with `label()`; `skip(cfg, rows)`
    leaves one out) per prologue and rows bucket; returns {"plan": {prologue: {rows: launch as a dict, or None
    for cuBLAS}}, "timings_us": {...}}.

    `after_norm`: each timed "plain" call follows an RMSNorm (launched with PDL where the GPU has it), on
    every path alike. A PDL-launched kernel starts while the kernel before it finishes and lets the next one
    start early, where cuBLAS's kernels wait for the one before and stop the next: timed back to back
    alone, that overlap is invisible on cuBLAS's side and under-counted on the kernel's."""
    gen = torch.Generator(device=device).manual_seed(0)
    ws, copies = weight_copies(n, k, dtype, device, gen)
    plan: dict = {}
    timings = {}
    order = sorted(prologues, key=lambda p: p != "plain")
    paths = {(prologue, rows): prologue_paths(prologue, rows, k, gen, dtype, device, kernels, after_norm)
             for prologue in order for rows in buckets}
    prebuild([functools.partial(kernel, ws[0], cfg) for (_, rows), (_, kernel, _) in paths.items()
              for cfg in candidates if not skip(cfg, rows)], device)
    for prologue in order:
        plan[prologue] = {}
        for rows in buckets:
            torch_path, kernel, unfused_kernel = paths[prologue, rows]
            ref = torch_path(ws[0], None)
            best_us = graph_time_us(lambda i: torch_path(ws[i], None), copies)
            timings[f"{prologue}/{rows}/torch"] = round(best_us, 2)
            plain = plan.get("plain", {}).get(str(rows)) if unfused_kernel is not None else None
            if plain is not None:  # what the layer runs without this fusion: the prologue, then the kernel
                cfg = type(candidates[0])(**plain)
                us = graph_time_us(lambda i: unfused_kernel(ws[i], cfg), copies)
                timings[f"{prologue}/{rows}/unfused+{cfg.label()}"] = round(us, 2)
                best_us = min(best_us, us)
            timed = []
            for cfg in candidates:
                if skip(cfg, rows):
                    continue
                try:
                    check_close(kernel(ws[0], cfg), ref)
                    us = graph_time_us(lambda i, cfg=cfg: kernel(ws[i], cfg), copies)
                except Exception as e:  # noqa: BLE001 - a launch this GPU cannot build or run right is no candidate
                    logger.warning("%s %dx%d %s %s rows %d: not timed (%s)", name, n, k, prologue, cfg.label(),
                                   rows, e)
                    continue
                timings[f"{prologue}/{rows}/{cfg.label()}"] = round(us, 2)
                timed.append((cfg, us))
            chosen = choose(timed, best_us * MARGIN)
            plan[prologue][str(rows)] = dataclasses.asdict(chosen) if chosen is not None else None
    del ws
    logger.info("autotune %s %dx%d: %s", name, n, k,
                {p: {r: (type(candidates[0])(**c).label() if c else "torch") for r, c in b.items()}
                 for p, b in plan.items()})
    return {"plan": plan, "timings_us": timings}
