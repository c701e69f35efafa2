"""`flush_at_exit`: close a KV controller that is still open when the interpreter exits, so that the backups
it decided (queued for the next step plan, or copying) and their L3 writes complete instead of being lost.

The hook must run before `concurrent.futures` stops its worker threads (after that, submitting the L3 write
of a finished copy fails): those run from `threading`'s exit hooks, in reverse order of registration, before
the `atexit` ones, so the hook is registered there when the interpreter offers it, else with `atexit`.
"""
from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any

logger = logging.getLogger(__name__)


def _close(ref: "weakref.ref[Any]") -> None:
    kv = ref()
    if kv is None:
        return
    try:
        kv.close()
    except Exception as e:  # noqa: BLE001 - at exit: report in one line, never a traceback
        logger.warning("KV tiers: flushing at exit failed: %s", e)


def flush_at_exit(kv: Any) -> None:
    """Arrange for `kv.close()` at interpreter exit (a weak reference: a closed, collected manager costs
    nothing)."""
    register = getattr(threading, "_register_atexit", None)
    try:
        (register or atexit.register)(_close, weakref.ref(kv))
    except RuntimeError:  # already shutting down: nothing left to flush into
        pass
