"""`Watchdog`: ends the engine process when it is stuck, so that the server exits (status 1) instead of hanging.

Two ways a served engine can stop making progress without failing:
- A step that never returns: a hung device, or a tensor-parallel rank that stopped answering without dying (its
  control channel stays open, so nothing marks it lost) leaves the step waiting in a collective until the
  group's own timeout. A step running longer than `--watchdog-timeout` seconds (SGLang's flag; 300 s on a GPU
  where unset, as SGLang's, none on the CPU) ends the process. The bound is generous because a long prefill
  chunk or a kernel compiled inside a step looks the same from outside, and a false restart costs more than a
  late one.
- A lost rank (its process died) that the loop cannot notice because the step it runs waits on the dead rank:
  NCCL's collectives block until their own timeout (minutes). Once a rank has been gone for `lost_grace_s`
  without the process ending, the process exits. The loop notices a loss itself whenever it is not inside a
  step (after a failed step, at its idle wake) and exits through the normal clean-up.
The frontend's link then sees the engine process gone, fails the open requests and stops the server.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)


class Watchdog:
    """A daemon thread from `start()` to `stop()` that watches `loop.step_started` (monotonic seconds, None
    between steps) against `step_timeout_s` (0: no bound) and, where `watch_ranks`, `engine.lost()`.
    `hard_exit` is `os._exit` in the engine process (a test passes its own)."""

    def __init__(self, engine: Any, loop: Any, step_timeout_s: float, watch_ranks: bool,
                 lost_grace_s: float = 30.0, poll_s: float = 1.0,
                 hard_exit: Callable[[int], Any] = os._exit) -> None:
        self.engine = engine
        self.loop = loop
        self.step_timeout_s = step_timeout_s
        self.watch_ranks = watch_ranks
        self.lost_grace_s = lost_grace_s
        self.poll_s = poll_s
        self.hard_exit = hard_exit
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lost_since: Optional[float] = None  # when `engine.lost()` first named a rank

    @property
    def needed(self) -> bool:
        """Whether there is anything to watch (else `start` starts no thread)."""
        return self.step_timeout_s > 0 or self.watch_ranks

    def start(self) -> "Watchdog":
        if self.needed:
            self._thread = threading.Thread(target=self._run, name="tierlm-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(self.poll_s + 1.0)

    def _run(self) -> None:
        while not self._stopped.wait(self.poll_s):
            why = self.check(time.monotonic())
            if why is not None:
                log.error("%s: engine process exits now", why)
                self.hard_exit(1)
                return

    def check(self, now: float) -> Optional[str]:
        """Why the process must end at `now` (monotonic seconds), or None."""
        started = self.loop.step_started
        if self.step_timeout_s > 0 and started is not None and now - started > self.step_timeout_s:
            return (f"a step has run for {now - started:.0f} s, over --watchdog-timeout {self.step_timeout_s:g} "
                    "(a hung device, or a tensor-parallel rank that stopped answering)")
        why = self.engine.lost() if self.watch_ranks else None
        if why is None:
            self._lost_since = None
            return None
        self._lost_since = now if self._lost_since is None else self._lost_since
        if now - self._lost_since < self.lost_grace_s:
            return None
        return (f"a tensor-parallel rank is gone ({why}) and the engine has not stopped within "
                f"{self.lost_grace_s:.0f} s (a step waiting on it?)")
