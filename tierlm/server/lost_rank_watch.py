"""`LostRankWatch`: ends the engine process when a tensor-parallel rank is gone and the engine does not stop.

The engine loop notices a lost rank itself (a failed step, or its idle wake) and exits through the normal
clean-up. What it cannot do is leave a step that waits on the dead rank: NCCL's collectives block until their
own timeout (minutes), where the open requests would hang with them. This thread checks `engine.lost()` beside
the loop and, once a rank has been gone for `grace_s` without the process ending, exits it at once (status 1):
the frontend's watchdog then fails the open requests and stops the server.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)


class LostRankWatch:
    """A daemon thread from `start()` to `stop()`; `hard_exit` is `os._exit` in the engine process (a test passes
    its own)."""

    def __init__(self, engine: Any, grace_s: float = 30.0, poll_s: float = 1.0,
                 hard_exit: Callable[[int], Any] = os._exit) -> None:
        self.engine = engine
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.hard_exit = hard_exit
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "LostRankWatch":
        self._thread = threading.Thread(target=self._run, name="tierlm-lost-rank-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(self.poll_s + 1.0)

    def _run(self) -> None:
        since: Optional[float] = None
        while not self._stopped.wait(self.poll_s):
            why = self.engine.lost()
            if why is None:
                continue
            since = time.monotonic() if since is None else since
            if time.monotonic() - since >= self.grace_s:
                log.error("a tensor-parallel rank is gone (%s) and the engine has not stopped within %.0f s "
                          "(a step waiting on it?): engine process exits now", why, self.grace_s)
                self.hard_exit(1)
                return
