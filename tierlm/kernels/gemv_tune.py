"""Which small-batch linear runs each weight shape: cuBLAS or `gemv` with a tuned launch, per batch bucket.

Tuned once per (device, dtype, weight shape) on random data and kept in the cache root's autotune store
(`autotune/gemv/<fingerprint>.json`). Each candidate is timed inside a CUDA graph, as decode steps run it,
cycling through enough weight copies that the weights come from HBM and not from L2. A bucket keeps cuBLAS
unless a candidate beats it by `MARGIN`, so turning the kernel on never makes a shape slower than its
timing said; a fused prologue must also beat, by as much, the unfused prologue followed by the plain plan's
launch (what the layer runs where the fusion is not chosen).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Dict, Mapping, Optional

import torch
import torch.nn.functional as F

from tierlm.kernels.gemv import MAX_ROWS, GemvConfig, gemv

logger = logging.getLogger(__name__)
KERNEL = "gemv"
# rows are rounded up to one of these (the kernel pads to a power of two anyway). At 8 rows cuBLAS won on an
# H200 for every Qwen3-0.6B and Llama-3.1-8B shape (bare GEMV) and every Qwen3-0.6B prologue, so 5-8 rows go
# to it without a timing.
BUCKETS = (1, 2, 4)
CANDIDATES = (tuple(GemvConfig(n, k, 4) for n, k in ((2, 1024), (4, 1024), (8, 1024), (4, 512)))
              + tuple(GemvConfig(n, k, 4, True) for n, k in ((2, 1024), (4, 512), (4, 1024), (8, 512)))
              + tuple(GemvConfig(n, k, w, True, 2) for n, k, w in ((4, 512, 4), (8, 512, 4), (16, 512, 8))))
MARGIN = 0.97  # a candidate must take at most this fraction of the faster unfused path's time
TOLERANCE = 0.02  # of the reference's largest output: a launch further from it than 16-bit rounding is no candidate
_CALLS = 20
_WEIGHT_BYTES = 160 << 20  # over three times the L2 of current data-centre GPUs

GemvPlan = Mapping[str, Mapping[int, Optional[GemvConfig]]]  # prologue -> rows bucket -> launch (None: cuBLAS)


def bucket_of(rows: int) -> int:
    """The bucket whose plan serves `rows` rows (0 when above the largest: cuBLAS)."""
    for b in BUCKETS:
        if rows <= b:
            return b
    return 0


def graph_time_us(fn: Callable[[int], object], copies: int) -> float:
    """Median microseconds per call of `fn(i)`, replayed from a CUDA graph over `copies` inputs."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for i in range(2):
            fn(i % copies)
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for i in range(_CALLS):
            fn(i % copies)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(5):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / _CALLS)
    return sorted(times)[len(times) // 2]


def check_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    """Raise unless `out` is `ref` to within `TOLERANCE` of ref's largest magnitude: a launch that builds but
    computes something else (a miscompile on some GPU, a bad tile) is never chosen, however fast."""
    out, ref = out.float(), ref.float()
    err, tol = (out - ref).abs().max().item(), TOLERANCE * ref.abs().max().item()
    if not err <= tol:  # NaN fails too
        raise RuntimeError(f"differs from the torch path by {err:.3g} (tolerance {tol:.3g})")


def weight_copies(n: int, k: int, dtype: torch.dtype, device: torch.device,
                  gen: torch.Generator) -> tuple[list, int]:
    """Enough random `n x k` weights that cycling through them reads each from HBM, not from L2."""
    copies = max(1, -(-_WEIGHT_BYTES // (n * k * torch.finfo(dtype).bits // 8)))
    return [(torch.randn(n, k, generator=gen, device=device) * 0.02).to(dtype) for _ in range(copies)], copies


def _paths(prologue: str, rows: int, k: int, gen: torch.Generator, dtype: torch.dtype, device: torch.device):
    """(the unfused torch path, the kernel with a launch, the unfused prologue then the plain kernel or None
    for "plain") as functions of (weight, config), for what a layer may fuse into its kernel: nothing
    ("plain"), the RMSNorm before it, or the SiLU·mul of [gate | up]."""
    from tierlm.kernels.fused import rmsnorm, silu_mul
    from tierlm.kernels.gemv import rmsnorm_gemv, silu_mul_gemv

    def rand(*shape):
        return torch.randn(*shape, generator=gen, device=device).to(dtype)

    if prologue == "rmsnorm":
        x, res, nw = rand(rows, k), rand(rows, k), rand(k)
        return (lambda w, c: F.linear(rmsnorm(x, nw, 1e-6, res)[0], w),
                lambda w, c: rmsnorm_gemv(x, res, nw, 1e-6, w, None, c),
                lambda w, c: gemv(rmsnorm(x, nw, 1e-6, res)[0], w, None, c))
    if prologue == "silu_mul":
        gu = rand(rows, 2 * k)
        return (lambda w, c: F.linear(silu_mul(gu), w), lambda w, c: silu_mul_gemv(gu, w, c),
                lambda w, c: gemv(silu_mul(gu), w, None, c))
    x = rand(rows, k)
    return lambda w, c: F.linear(x, w), lambda w, c: gemv(x, w, None, c), None


def tune_gemv(n: int, k: int, prologues: tuple, dtype: torch.dtype, device: torch.device) -> Dict[str, object]:
    """Time the unfused paths and every candidate, per prologue and rows bucket; the winners. A prologue is
    fused only where that beats both unfused paths a layer would otherwise run: the prologue then cuBLAS, and
    the prologue then the kernel with the "plain" plan's launch for those rows (so "plain" is tuned first).
    A candidate whose result is not the torch path's (`check_close`) is not timed."""
    gen = torch.Generator(device=device).manual_seed(0)
    ws, copies = weight_copies(n, k, dtype, device, gen)
    plan: dict = {}
    timings = {}
    for prologue in sorted(prologues, key=lambda p: p != "plain"):
        plan[prologue] = {}
        for rows in BUCKETS:
            torch_path, kernel, unfused_kernel = _paths(prologue, rows, k, gen, dtype, device)
            ref = torch_path(ws[0], None)
            best_us = graph_time_us(lambda i: torch_path(ws[i], None), copies)
            timings[f"{prologue}/{rows}/torch"] = round(best_us, 2)
            plain = plan.get("plain", {}).get(str(rows)) if unfused_kernel is not None else None
            if plain is not None:  # what the layer runs without this fusion: the prologue, then the kernel
                cfg = GemvConfig(**plain)
                us = graph_time_us(lambda i: unfused_kernel(ws[i], cfg), copies)
                timings[f"{prologue}/{rows}/unfused+{cfg.label()}"] = round(us, 2)
                best_us = min(best_us, us)
            best_us *= MARGIN
            plan[prologue][str(rows)] = None
            for cfg in CANDIDATES:
                try:
                    check_close(kernel(ws[0], cfg), ref)
                    us = graph_time_us(lambda i, cfg=cfg: kernel(ws[i], cfg), copies)
                except Exception as e:  # noqa: BLE001 - a launch this GPU cannot build or run right is no candidate
                    logger.warning("gemv %dx%d %s %s rows %d: not timed (%s)", n, k, prologue, cfg.label(), rows, e)
                    continue
                timings[f"{prologue}/{rows}/{cfg.label()}"] = round(us, 2)
                if us < best_us:
                    best_us, plan[prologue][str(rows)] = us, dataclasses.asdict(cfg)
    del ws
    logger.info("autotune %s %dx%d: %s", KERNEL, n, k, {p: {r: (GemvConfig(**c).label() if c else "torch")
                                                            for r, c in b.items()} for p, b in plan.items()})
    return {"plan": plan, "timings_us": timings}


def tuned_plan(n: int, k: int, prologues: tuple, dtype: torch.dtype, device: torch.device) -> GemvPlan:
    """The plan of an `n x k` weight read through `prologues` from the autotune store (tuned once if missing)."""
    from tierlm.cachedir import AutotuneStore

    factors = {"device": torch.cuda.get_device_name(device), "dtype": str(dtype).replace("torch.", ""),
               "n": n, "k": k, "prologues": list(prologues), "max_rows": MAX_ROWS, "buckets": list(BUCKETS),
               "candidates": [dataclasses.astuple(c) for c in CANDIDATES], "margin": MARGIN,
               "reference": "the better of prologue + cuBLAS and prologue + the plain plan",
               "checked": TOLERANCE}
    results = AutotuneStore().get_or_tune(KERNEL, factors, lambda: tune_gemv(n, k, prologues, dtype, device))
    return {p: {int(rows): (GemvConfig(**cfg) if cfg else None) for rows, cfg in b.items()}
            for p, b in results["plan"].items()}
