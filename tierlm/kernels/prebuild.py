"""Building a start-up tuner's kernel variants on several threads before it times them one at a time.

On a fresh cache root the tuners (small-batch linears, decode attention, the fused MoE) spend most of their time
in Triton's compiler: every candidate launch is a variant of its own, built the first time it runs. Most of a
build runs outside the GIL (Triton's compiler passes and ptxas), so launching every candidate once from a pool of
threads builds them side by side; the serial timings that follow find each variant built and time only the GPU.
Timing itself stays serial: launches that run at the same time would slow each other down.

`TIERLM_COMPILE_THREADS` sets the pool's size (1: no pool, every variant is built when the tuner first runs it);
by default the CPUs this process may use, at most `MAX_THREADS`.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
from typing import Callable, Mapping, Optional, Sequence

import torch

logger = logging.getLogger(__name__)
MAX_THREADS = 16  # ranks of one host each start a pool of their own
ENV = "TIERLM_COMPILE_THREADS"


def compile_threads(environ: Optional[Mapping[str, str]] = None) -> int:
    """The pool size: `TIERLM_COMPILE_THREADS` (a positive integer; anything else is logged and ignored), else
    the usable CPUs up to `MAX_THREADS`."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if value:
        if value.isdigit() and int(value) >= 1:
            return int(value)
        logger.warning("%s=%r is not a positive number of threads: ignored", ENV, value)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cpus))


def prebuild(launches: Sequence[Callable[[], object]], device: torch.device,
             threads: Optional[int] = None) -> int:
    """Run each of `launches` once (a first launch builds its kernel variant), spread over `threads` threads
    (default `compile_threads()`), each thread on `device`; wait for the device. The first runs alone, so the
    kernels every launch shares (an RMSNorm before each) are built once. A launch that raises is counted, not
    raised: the tuner's own call of it reports the error where it decides what to do with it. Returns the count.
    With one thread, or one launch, nothing runs: the tuner builds as it goes."""
    threads = compile_threads() if threads is None else threads
    if threads < 2 or len(launches) < 2:
        return 0

    on_gpu = device.type == "cuda"
    if on_gpu and device.index is None:  # a new thread starts on device 0, not on the caller's current device
        device = torch.device("cuda", torch.cuda.current_device())

    def run(launch: Callable[[], object]) -> bool:
        with torch.cuda.device(device) if on_gpu else contextlib.nullcontext():
            try:
                launch()
            except Exception as e:  # noqa: BLE001 - reported by the tuner's serial call of the same launch
                logger.debug("prebuild: a launch failed (%s); the tuner reports it", e)
                return False
        return True

    failed = 0 if run(launches[0]) else 1
    with cf.ThreadPoolExecutor(min(threads, len(launches) - 1), thread_name_prefix="tierlm-build") as pool:
        failed += sum(not ok for ok in pool.map(run, launches[1:]))
    if on_gpu:
        torch.cuda.synchronize(device)
    return failed
