"""Start-up work of an engine: warm-up requests (fewer on a CPU), sealing the AOT tree, and a report of what had to be
compiled, counted from torch's own counters and the kernel binaries that appeared (never inferred from time)."""
from __future__ import annotations

import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional

from tierlm.utils.triton_mode import interpreted

logger = logging.getLogger(__name__)
CALIBRATION_TOKENS = 1024  # prompt length of the start-up prefill measurement (a typical prompt chunk)


def compiled_artifacts() -> dict[str, str]:
    """The kernels in the Triton cache directory: each compiled kernel's directory name (a hash of its source,
    constants and options) with the kernel's name, read from its binary's file name. Directories without a
    kernel binary (Triton's launcher modules, a compile still writing) are left out. Two snapshots' difference
    names what compiled between them."""
    path = os.environ.get("TRITON_CACHE_DIR")
    if not path or not Path(path).is_dir():
        return {}
    found = {}
    for d in Path(path).iterdir():
        binaries = sorted(f.stem for f in d.iterdir() if f.suffix in (".cubin", ".hsaco")) if d.is_dir() else []
        if binaries:
            found[d.name] = binaries[0]
    return found


def compiled_since(before: dict[str, str]) -> list[str]:
    """Names of the kernels compiled into the Triton cache since the snapshot `before` (sorted)."""
    return sorted(name for key, name in compiled_artifacts().items() if key not in before)


def torch_compile_counts() -> dict[str, int]:
    """Compilations this process did so far, from torch's counters: graphs Dynamo traced, AOTAutograd cache
    misses (each one an Inductor compile of a graph) and Inductor FX-graph cache misses."""
    if "torch._dynamo" not in sys.modules:  # nothing imported Dynamo: nothing was compiled
        return {"dynamo_graphs": 0, "aot_autograd_misses": 0, "inductor_graph_misses": 0}
    from torch._dynamo.utils import counters
    return {"dynamo_graphs": counters["stats"]["unique_graphs"],
            "aot_autograd_misses": counters["aot_autograd"]["autograd_cache_miss"],
            "inductor_graph_misses": counters["inductor"]["fxgraph_cache_miss"]}


class Probe:
    """What an engine's start-up began with: the time, torch's compile counters, the Triton cache's kernels."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.counts = torch_compile_counts()
        self.triton_kernels = compiled_artifacts()


def warm_up(engine: Any) -> None:
    """Run one prefill and a few decode steps of `engine` (an `Engine`) so no user request pays for kernel
    compilation.

    The request is aborted rather than finished, so nothing of it enters the prefix cache or the lower
    tiers, and the engine's counters are reset afterwards.
    """
    from tierlm.sampling_params import SamplingParams

    ids = _warm_ids(engine, 2 * engine.kv.page_size + 3)
    params = SamplingParams(temperature=0.7, max_tokens=8, ignore_eos=True, detokenize=False)
    run_aborted(engine, {"__warmup__": ids}, params, tokens=3)
    warm_burst(engine, ids, params)
    engine.sampler.warm_up(engine.model_config.vocab_size, engine.worker.runner.dtype)
    try:
        warm_tiers(engine)
    except Exception as e:  # noqa: BLE001 - a warm-up: the engine starts, and the first real copy reports it
        logger.warning("KV tiers: warming the copies failed (%s: %s); the first copies pay their first use",
                       type(e).__name__, e)
    if engine.scheduler.mixed.max_tokens > 0:
        warm_mixed(engine, ids, params)
    calibrate_prefill(engine)
    _reset_counters(engine)


def warm_up_host(engine: Any) -> None:
    """The warm-up of an engine that runs on the CPU: one short greedy request (a prefill and a decode step),
    aborted, and one pass of each of the sampler's paths, so the first user request does not pay for the first
    use of torch's CPU kernels and buffers. Nothing compiles or captures there, so the rest of `warm_up` does
    not apply. The engine's random generator is left as it was."""
    from tierlm.sampling_params import SamplingParams

    n = min(2 * engine.kv.page_size + 3, engine.max_model_len - 8)
    if n < 1:
        return
    ids = _warm_ids(engine, n)
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True, detokenize=False)
    run_aborted(engine, {"__warmup__": ids}, params, tokens=2)
    engine.sampler.warm_up(engine.model_config.vocab_size, engine.worker.runner.dtype)
    _reset_counters(engine)


def _warm_ids(engine: Any, n: int) -> list[int]:
    """`n` fixed pseudo-random prompt ids of a warm-up request (from the first 1,000 of the vocabulary)."""
    rng = random.Random(0)
    return [rng.randrange(min(engine.model_config.vocab_size, 1000)) for _ in range(n)]


def _reset_counters(engine: Any) -> None:
    """Zero the engine's counters and clock after a warm-up, so metrics count user requests only."""
    for key in engine.counters:
        engine.counters[key] = 0
    engine.clock.reset()


def warm_tiers(engine: Any) -> None:
    """Back free device pages up to free host pages (a run long enough to go by DMA straight from the pool,
    and one page through the staging buffer) and load them back by each path a step may take (a copy-engine
    load beside a short step, a kernel load beside a long prefill), so the first wave that backs up or loads
    does not pay for first use of the copy kernels and their staging. The warm-up request is aborted, so
    without this nothing copies before the first user request does."""
    from tierlm.kvcache.dma import DIRECT_MIN_PAGES
    from tierlm.kvcache.tier_io import Ticket
    from tierlm.kvcache.transfer import OVERLAP_TOKENS

    kv = engine.kv
    if kv.io is None:
        return
    n = DIRECT_MIN_PAGES + 1
    dev, host = kv.allocator.alloc(n), kv.host_allocator.alloc(n)
    try:
        if dev and host:
            kv.io.backup(dev[:-1], host[:-1], None, Ticket())  # consecutive on both sides: one run
            kv.io.backup(dev[-1:], host[-1:], None, Ticket())
            kv.io.wait()
            for overlap in (0, OVERLAP_TOKENS):
                loads = kv.io.load(host, dev, overlap)
                if loads is not None:
                    loads.wait_all()
            _sync(engine)
            kv.io.finished_loads()  # a first use of the copies is no measure of the host tier's bandwidth
    finally:
        if dev:
            kv.allocator.free(dev)
        if host:
            kv.host_allocator.free(host)


def run_aborted(engine: Any, prompts: dict[str, list[int]], params: Any, tokens: int) -> float:
    """Run requests (request id -> prompt ids), all queued at once, each until it has `tokens` output tokens,
    then abort it (nothing of it is cached or backed up, no store is asked for it); returns the seconds from their
    arrival to the first token of any (0: refused)."""
    t0, first = time.perf_counter(), 0.0
    for request_id, ids in prompts.items():
        engine.add_request(request_id, ids, params, cache=False)
    while engine.has_unfinished():
        for out in engine.step():
            if out.num_output_tokens >= 1 and not first:
                first = time.perf_counter() - t0
            if out.num_output_tokens >= tokens and not out.finished:
                engine.abort_request(out.request_id)
    return first


def warm_burst(engine: Any, ids: list[int], params: Any) -> None:
    """Prefill more short prompts in one pass than a captured prefill pass takes (`MAX_CHUNKS` + 1, within the
    running-request and prefill-token limits), then decode them once; all are aborted. Such a pass runs its
    attention outside the captured passes, in a launch order of its own: without this the first burst of
    requests after a start compiles that kernel variant inside its first token."""
    from tierlm.engine.mixed_graph import MAX_CHUNKS

    config = engine.config
    n = min(MAX_CHUNKS + 1, config.max_running_requests, config.max_prefill_tokens // 3)
    if n < 2:
        return
    # three tokens each; aborted like the warm-up request, so nothing stays cached
    run_aborted(engine, {f"__warmup_burst_{i}__": [ids[(i + j) % len(ids)] for j in range(3)] for i in range(n)},
                params, tokens=2)


def warm_mixed(engine: Any, ids: list[int], params: Any) -> None:
    """Run one mixed step (a prompt's prefill beside a decoding request) so the first mixed step under load
    does not compile its kernels; both requests are aborted."""
    engine.add_request("__warmup_decode__", ids, params, cache=False)
    added = False
    while engine.has_unfinished():
        for out in engine.step():
            if out.request_id == "__warmup_decode__" and out.num_output_tokens >= 1 and not added:
                engine.add_request("__warmup_mixed__", list(reversed(ids)), params, cache=False)
                added = True
            elif out.request_id == "__warmup_mixed__" and out.num_output_tokens >= 2:
                engine.abort_request("__warmup_mixed__")
                engine.abort_request("__warmup_decode__")


def _sync(engine: Any) -> None:
    if engine.device.type == "cuda":
        import torch
        torch.cuda.synchronize(engine.device)


def calibrate_prefill(engine: Any, tokens: int = CALIBRATION_TOKENS) -> Optional[float]:
    """Measure the prefill rate once for the KV cost model (when the engine has lower tiers), so its first
    load-or-recompute decisions use this machine's rate instead of a prior; returns tokens per second.

    Two prompts of `tokens` random tokens (capped by the step budget and the context) are prefilled one after
    the other: the first pays for first use of the kernels at that length, the second is timed from arrival
    to first token. Both are aborted at their first token, like the warm-up.
    """
    from tierlm.sampling_params import SamplingParams

    cost = getattr(engine.kv, "cost", None)
    ps = engine.kv.page_size
    room = engine.kv.capacity_pages * ps // 2  # never crowd the pool (or ask more than it holds)
    n = min(tokens, engine.config.max_prefill_tokens, engine.max_model_len - 4, room) // ps * ps
    if cost is None or n < ps:
        return None
    rng = random.Random(1)
    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True, detokenize=False)
    seconds = 0.0
    for i in range(2):
        _sync(engine)
        prompt = [rng.randrange(engine.model_config.vocab_size) for _ in range(n)]
        seconds = run_aborted(engine, {f"__calibrate{i}__": prompt}, params, tokens=1)
    _sync(engine)
    engine.prefill_timer.poll()  # samples of the two prompts land before the calibration replaces them
    if seconds <= 0:  # the prompts were refused: keep the prior
        return None
    cost.calibrate_prefill(n, seconds)
    logger.info("KV cost model: prefill %.0f tokens/s (%d tokens in %.1f ms)", n / seconds, n, seconds * 1e3)
    return n / seconds


def finish(engine: Any, probe: Probe) -> dict:
    """Warm up (`warm_up` on CUDA; `warm_up_host` on a CPU, unless Triton's interpreter runs the kernels: a test
    mode, in which an interpreted pass costs seconds and warms nothing a later one reuses), seal the AOT tree, and
    report what this start compiled.

    `compilations` is the sum of torch's counters since `probe` (zero: Dynamo traced nothing and Inductor
    compiled nothing); `new_kernels` counts kernel binaries that appeared in the AOT tree (or, without one,
    Triton kernels in the cache root).
    """
    runner = engine.worker.runner
    if engine.device.type == "cuda":
        warm_up(engine)
    elif not interpreted():
        warm_up_host(engine)
    tree: Optional[Any] = runner.aot
    now = torch_compile_counts()
    counts = {k: now[k] - probe.counts[k] for k in now}
    report: dict = {"startup_s": round(time.perf_counter() - probe.started, 3), "compile": runner.config.compile,
                    "compilations": sum(counts.values()), **counts}
    if tree is not None:
        tree.end_startup()
        names = tree.new_kernels()
        report["new_kernels"], report["new_kernel_names"] = len(names), names
        report["aot_key"] = tree.key
        report["aot_sealed_now"] = tree.seal()
    else:
        report["new_kernels"] = len(compiled_since(probe.triton_kernels))
    what = "compiled nothing" if report["compilations"] == 0 and report["new_kernels"] == 0 else (
        f"{report['compilations']} compilation(s), {report['new_kernels']} new kernel(s)")
    logger.info("start-up %.1f s; %s%s", report["startup_s"], what,
                f" (AOT tree {tree.key[:12]}, {tree.path})" if tree is not None else "")
    return report
