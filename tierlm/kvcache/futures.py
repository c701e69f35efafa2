"""Futures for work that may run on a thread or inline: one shape for callers either way."""
from __future__ import annotations

import concurrent.futures as cf
from typing import Any, Callable


def finished(fn: Callable, *args: Any) -> cf.Future:
    """A future already holding `fn(*args)` (or the exception it raised): the inline version of `submit`."""
    fut: cf.Future = cf.Future()
    try:
        fut.set_result(fn(*args))
    except Exception as e:  # noqa: BLE001 - delivered through the future like a thread's
        fut.set_exception(e)
    return fut


def submit_or_run(pool: cf.ThreadPoolExecutor, fn: Callable, *args: Any) -> cf.Future:
    """`pool.submit(fn, *args)`, or `fn` run inline once the pool is shut down (a flush at interpreter exit
    still stores its pages)."""
    try:
        return pool.submit(fn, *args)
    except RuntimeError:
        return finished(fn, *args)
