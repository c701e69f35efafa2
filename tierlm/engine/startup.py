"""Start-up work of an engine on CUDA: a warm-up request, and a report of what had to be compiled."""
from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def compiled_artifacts() -> int:
    """Number of kernels in the Triton cache directory (each compiled kernel is one directory)."""
    path = os.environ.get("TRITON_CACHE_DIR")
    if not path or not Path(path).is_dir():
        return 0
    return sum(1 for p in Path(path).iterdir() if p.is_dir())


def warm_up(engine: Any) -> None:
    """Run one prefill and a few decode steps of `engine` (an `Engine`) so no user request pays for kernel
    compilation.

    The request is aborted rather than finished, so nothing of it enters the prefix cache or the lower
    tiers, and the engine's counters are reset afterwards.
    """
    from tierlm.sampling_params import SamplingParams

    rng = random.Random(0)
    ids = [rng.randrange(min(engine.model_config.vocab_size, 1000)) for _ in range(2 * engine.kv.page_size + 3)]
    engine.add_request("__warmup__", ids, SamplingParams(temperature=0.7, max_tokens=8, ignore_eos=True,
                                                         detokenize=False))
    while engine.has_unfinished():
        for out in engine.step():
            if out.num_output_tokens >= 3 and not out.finished:
                engine.abort_request(out.request_id)
    for key in engine.counters:
        engine.counters[key] = 0


def report_compiles(before: int, started: float) -> dict:
    new = compiled_artifacts() - before
    status = "compiled nothing: every kernel came from the cache root" if new == 0 else \
        f"compiled {new} new kernels into the cache root"
    logger.info("start-up %.1f s; %s (%s)", time.perf_counter() - started, status,
                os.environ.get("TRITON_CACHE_DIR", "no Triton cache dir"))
    return {"new_kernels": new, "startup_s": round(time.perf_counter() - started, 3)}
