"""Persistent autotuning of the Triton decode kernel's launch parameters, per device, model shape and batch bucket.

The tuner times each candidate at decode batches like the engine's (mixed lengths, the pool's shuffled pages,
graph-replayed). Results live in the cache root's autotune store (`autotune/triton_decode/<fingerprint>.json`),
keyed by the device name, dtype, head counts, head size, page size and the shapes timed, and are reused on the next
start unless `TIERLM_AUTOTUNE_CACHE=0` asks for a fresh tuning (written to `autotune/runs/`, canonical file untouched).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Callable, Sequence

import torch

from tierlm.attention.triton_backend import TritonAttentionConfig
from tierlm.kernels.decode_attention import decode_attention
from tierlm.kernels.pool_dtype import compute_dtype
from tierlm.kernels.prebuild import prebuild
from tierlm.kernels.request_splits import choose_max_splits

logger = logging.getLogger(__name__)
KERNEL = "triton_decode"
CANDIDATES = {"decode_block_n": (64, 128), "decode_num_warps": (4, 8), "decode_num_stages": (2, 3)}


@dataclasses.dataclass(frozen=True)
class TuneShape:
    """One decode batch the tuner times: `batch` requests whose contexts are spread evenly from `low` to `high`
    tokens (a batch of mixed lengths waits on its longest requests, which a uniform one never shows)."""

    batch: int
    low: int
    high: int

    def lengths(self) -> list[int]:
        step = (self.high - self.low) / max(1, self.batch - 1)
        return [round(self.low + i * step) for i in range(self.batch)]


# Per bucket (decode steps of at least that many requests, up to the next bucket's), the shapes its launch is timed
# at. A launch is scored by its time at each shape over the best candidate's there, summed. Scores within TIE of the
# best are one tie, which the deeper pipeline wins, then the smaller KV tile: in the engine's decode steps that launch
# ran ahead of ones the kernel timed alone could not tell from it. One bucket: a batch-1 bucket (1 x 640, 8 x 128-4096)
# picked a launch the engine's batch-1 step ran slower with (docs/benchmarks.md, #20).
BUCKETS = ((1, (TuneShape(64, 2048, 2048), TuneShape(128, 128, 2048), TuneShape(256, 128, 2048))),)
TIE = 0.01


def _as_lists(buckets) -> list:
    return [[b, [dataclasses.astuple(s) for s in shapes]] for b, shapes in buckets]


def decode_inputs(num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                  lengths: Sequence[int], page_size: int, kv_dtype: torch.dtype | None = None, seed: int = 0):
    """Random q, K, V and a request-to-token table of one decode step over `lengths`, laid out as the pool
    lays them out: each request's pages of `page_size` consecutive slots, the pages shuffled, no more slots than the
    lengths need (the tuner runs beside the engine's allocated pool). Returns (q, k, v, table, rows, lens)."""
    gen = torch.Generator().manual_seed(seed)
    counts = [-(-n // page_size) for n in lengths]
    order = torch.randperm(sum(counts), generator=gen)
    pages = torch.zeros(len(lengths), max(counts), dtype=torch.int64)
    for i, start in enumerate(itertools.accumulate([0, *counts[:-1]])):
        pages[i, :counts[i]] = order[start:start + counts[i]]
    pos = torch.arange(pages.shape[1] * page_size)
    table = (pages[:, pos // page_size] * page_size + pos % page_size).to(torch.int32).to(device)
    slots = sum(counts) * page_size
    gen = torch.Generator(device=device).manual_seed(seed)
    k = torch.randn(slots, num_kv_heads, head_dim, generator=gen, device=device, dtype=dtype).to(kv_dtype or dtype)
    v = torch.randn(slots, num_kv_heads, head_dim, generator=gen, device=device, dtype=dtype).to(kv_dtype or dtype)
    q = torch.randn(len(lengths), num_heads, head_dim, generator=gen, device=device, dtype=dtype)
    rows = torch.arange(len(lengths), dtype=torch.int32, device=device)
    lens = torch.tensor(list(lengths), dtype=torch.int32, device=device)
    return q, k, v, table, rows, lens


def decode_call(cfg: TritonAttentionConfig, q, k, v, table, rows, lens, num_sms: int) -> Callable[[], None]:
    """One decode attention call (both stages) under `cfg`'s launch on these inputs, as a function of nothing."""
    bs, heads, dim = q.shape
    s = choose_max_splits(bs, k.shape[1], num_sms, waves=cfg.decode_waves)
    mid_o = torch.empty(bs, heads, s, dim, dtype=torch.float32, device=q.device)
    mid_lse = torch.empty(bs, heads, s, dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)

    def run():
        decode_attention(q, k, v, table, rows, lens, out, mid_o, mid_lse, dim ** -0.5, min_chunk=cfg.decode_min_chunk,
                         block_n=cfg.decode_block_n, dot_min_group=cfg.decode_dot_min_group,
                         num_warps=cfg.decode_num_warps, num_stages=cfg.decode_num_stages)
    return run


def _median_ms(run: Callable[[], None]) -> float:
    """Median milliseconds of `run`, replayed from a CUDA graph as the engine's decode steps are (no host launch
    cost in the figure)."""
    import triton

    run()  # builds the kernels outside the graph (already built where `prebuild` ran)
    return triton.testing.do_bench_cudagraph(run, rep=25, return_mode="median")


def time_candidates(base: TritonAttentionConfig, inputs: tuple, num_sms: int,
                    failed: dict[str, str] | None = None) -> dict[str, float]:
    """Median milliseconds of every candidate launch (both stages) on `decode_inputs`' tuple, by name
    (`tile/warps/stages`); the candidates' kernels are built side by side first (`kernels.prebuild`). A launch
    this GPU cannot build or run (its shared memory) is no candidate: its error goes into `failed` by name, or
    into a warning where no dict is given."""
    calls = {"/".join(map(str, values)): decode_call(dataclasses.replace(base, **dict(zip(CANDIDATES, values))),
                                                     *inputs, num_sms)
             for values in itertools.product(*CANDIDATES.values())}
    prebuild(list(calls.values()), inputs[0].device)
    timed = {}
    for name, run in calls.items():
        try:
            timed[name] = _median_ms(run)
        except Exception as e:  # noqa: BLE001 - see the docstring
            why = str(e).splitlines()[0] if str(e) else repr(e)
            if failed is None:
                logger.warning("autotune %s %s: not timed (%s)", KERNEL, name, why)
            else:
                failed.setdefault(name, why)
    return timed


def pick(timings: dict[str, list[float]], tolerance: float = TIE) -> str:
    """The candidate (`tile/warps/stages`) whose times, each over the best candidate's at that shape, sum lowest;
    among those within `tolerance` of that sum, the one with the most stages, then the smallest KV tile."""
    best = [min(ts[i] for ts in timings.values()) for i in range(len(next(iter(timings.values()))))]
    score = {c: sum(t / b for t, b in zip(ts, best)) for c, ts in timings.items()}
    low = min(score.values())

    def rank(c: str) -> tuple:
        tile, _, stages = map(int, c.split("/"))
        return -stages, tile, score[c]
    return min((c for c in score if score[c] <= low * (1 + tolerance)), key=rank)


def tune_decode(base: TritonAttentionConfig, num_heads: int, num_kv_heads: int, head_dim: int,
                dtype: torch.dtype, device: torch.device, kv_dtype: torch.dtype | None = None,
                buckets=BUCKETS, page_size: int = 16) -> dict:
    """Time every candidate at each bucket's shapes on random data of the model's shape (K/V in `kv_dtype`,
    default `dtype`, in pages of `page_size`); return the launch `pick` chooses per bucket, as `launches`
    rows of (smallest batch, KV tile, warps, stages)."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    launches, all_timings = [], {}
    for min_batch, shapes in buckets:
        timings: dict[str, list[float]] = {}
        failed: dict[str, str] = {}
        for shape in shapes:
            inputs = decode_inputs(num_heads, num_kv_heads, head_dim, dtype, device, shape.lengths(), page_size,
                                   kv_dtype)
            for name, ms in time_candidates(base, inputs, sms, failed).items():
                timings.setdefault(name, []).append(round(ms * 1e3, 2))
            del inputs
        # a launch that failed at any shape is left out; none left: the base launch, untuned
        timings = {name: ts for name, ts in timings.items() if name not in failed}
        if failed:
            logger.warning("autotune %s from batch %d: %d launch(es) not timed, left out: %s (%s)", KERNEL,
                           min_batch, len(failed), ", ".join(sorted(failed)), next(iter(failed.values())))
        if not timings:
            logger.warning("autotune %s from batch %d: no candidate ran; keeping the default launch", KERNEL,
                           min_batch)
        best = pick(timings) if timings else f"{base.decode_block_n}/{base.decode_num_warps}/{base.decode_num_stages}"
        launches.append([min_batch, *map(int, best.split("/"))])
        all_timings[str(min_batch)] = timings
        logger.info("autotune %s from batch %d: %s at %s us (%s)", KERNEL, min_batch, best, timings.get(best), shapes)
    return {"launches": launches, "timings_us": all_timings, "page_size": page_size,
            "buckets": _as_lists(buckets)}


def tuned_config(base: TritonAttentionConfig, num_heads: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device, kv_dtype: torch.dtype | None = None,
                 page_size: int = 16) -> TritonAttentionConfig:
    """`base` with the decode launches per batch size taken from the autotune store (tuning once if missing); K/V
    in `kv_dtype` (the KV cache's, default `dtype`) and in pages of `page_size`."""
    from tierlm.cachedir import AutotuneStore

    factors = {"device": torch.cuda.get_device_name(device), "dtype": str(dtype).replace("torch.", ""),
               "num_heads": num_heads, "num_kv_heads": num_kv_heads, "head_dim": head_dim,
               "candidates": {k: list(v) for k, v in CANDIDATES.items()},
               "buckets": _as_lists(BUCKETS),
               "page_size": page_size}
    # an fp8 pool picks its own launch; factors only then, so the model-dtype tunings keep their keys. The
    # type K/V are widened to changes the loop's cost, so it is one of them.
    if kv_dtype is not None and kv_dtype != dtype:
        factors["kv_dtype"] = str(kv_dtype).replace("torch.", "")
        factors["widen"] = str(compute_dtype(dtype, kv_dtype))
    store = AutotuneStore()

    def tune() -> dict:
        return tune_decode(base, num_heads, num_kv_heads, head_dim, dtype, device, kv_dtype=kv_dtype,
                           page_size=page_size)
    launches = _launches(store.get_or_tune(KERNEL, factors, tune))
    if launches is None:  # a stored file that is JSON of the right kernel but not a launch table
        logger.warning("autotune: the stored %s result for this shape is not a launch table; tuning again", KERNEL)
        results = tune()
        store.save(KERNEL, factors, results)
        launches = _launches(results)
    block_n, warps, stages = launches[0][1:]
    return dataclasses.replace(base, decode_block_n=block_n, decode_num_warps=warps, decode_num_stages=stages,
                               decode_launches=launches)


def _launches(results: dict) -> tuple[tuple[int, int, int, int], ...] | None:
    """`results["launches"]` as a launch table, or None unless it is one: rows of (smallest batch, then one of the
    candidates' KV tiles, warps and stages), ascending, the first from batch 1."""
    try:
        rows = tuple(tuple(int(x) for x in row) for row in results["launches"])
    except (KeyError, TypeError, ValueError):
        return None
    ok = rows and rows[0][0] == 1 and all(len(r) == 4 for r in rows)
    ok = ok and all(a[0] < b[0] for a, b in zip(rows, rows[1:]))
    ok = ok and all(v in values for r in rows for v, values in zip(r[1:], CANDIDATES.values()))
    return rows if ok else None
