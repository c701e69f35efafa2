"""`PrefillTimer`: how long the engine's prefill steps take on the device, for the KV cost model.

Only prefill steps that load nothing from the host are timed: a step that waits for loads would make
compute look slower than it is (and so loading look better than it is). On CUDA the step is bracketed by
two events and read once they have completed, so timing never synchronises the device; elsewhere the
forward is synchronous and timed by the host clock. The first timed step is not reported: it pays for
first-use work (kernel compilation, lazy module loads), not for compute.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import torch


class PrefillTimer:
    """Times the prefill steps run inside `measure(plan)` and reports each, once it is known, to
    `sink(tokens, seconds)` (no sink: times nothing)."""

    def __init__(self, device: torch.device, sink: Optional[Callable[[int, float], None]], skip: int = 1) -> None:
        self.cuda = device.type == "cuda"
        self.sink = sink
        self._skip = skip
        self._pending: list[tuple[Any, Any, int]] = []  # (start, end, tokens) not yet completed

    @contextmanager
    def measure(self, plan: Any) -> Iterator[None]:
        """Run the body (the worker executing `plan`); timed if it is a prefill that loads nothing."""
        self.poll()
        if self.sink is None or not (plan.has_forward and plan.mode == "prefill" and not plan.load_host):
            yield
            return
        if not self.cuda:
            t0 = time.perf_counter()
            yield
            self._report(plan.num_tokens, time.perf_counter() - t0)
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self._pending.append((start, end, plan.num_tokens))

    def poll(self) -> None:
        """Report the timed steps that have completed on the device."""
        while self._pending and self._pending[0][1].query():
            start, end, tokens = self._pending.pop(0)
            self._report(tokens, start.elapsed_time(end) / 1e3)

    def _report(self, tokens: int, seconds: float) -> None:
        if self._skip > 0:
            self._skip -= 1
            return
        self.sink(tokens, seconds)
