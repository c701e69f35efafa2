"""`StepClock`: where the host spends an engine step, per phase, summed over the steps since the last reset.

Phases of `Engine.step`: `schedule` (the scheduler and the tier controller's decisions), `launch` (step plan,
the worker's execution call, sampling: with CUDA the kernels are queued, not waited for), `wait` (blocking
on the previous step's tokens: device time the host could not hide) and `outputs` (token bookkeeping,
detokenization, finished requests). A few clock reads per step, so it is always on; `snapshot` gives
milliseconds per step for /stats, benchmarks and the step profile.
"""
from __future__ import annotations

import time

PHASES = ("schedule", "launch", "wait", "outputs")


class StepClock:
    """Accumulated host seconds per step phase (see the module doc)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.steps = 0
        self._mark = 0.0

    def start(self) -> None:
        """A step begins (the first phase starts now)."""
        self.steps += 1
        self._mark = time.perf_counter()

    def lap(self, phase: str) -> None:
        """`phase` ended now; the next phase starts."""
        now = time.perf_counter()
        self.seconds[phase] += now - self._mark
        self._mark = now

    def reset(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.steps = 0

    def snapshot(self) -> dict:
        """Steps counted, host seconds per phase, and mean milliseconds per step (per phase and in all)."""
        n = max(1, self.steps)
        per = {p: round(s / n * 1e3, 4) for p, s in self.seconds.items()}
        return {"steps": self.steps, "seconds": dict(self.seconds), "ms_per_step": per,
                "total_ms_per_step": round(sum(per.values()), 4)}
