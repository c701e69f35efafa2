"""Errors shared by the layers: request errors typed by the HTTP status the server answers them with, and
the one-line description of an engine that failed to start.

They live at the bottom of the layering so that the engine (which raises request errors from `add_request`)
and the HTTP frontend (which raises them while preparing a request and maps them to answers by type) share
one set.
"""
from __future__ import annotations

import re
from typing import Optional


class RequestError(ValueError):
    """A request refused as given (bad parameter, empty prompt, ...); nothing was queued.

    `http_status` is the status the server answers with, `param` the request field at fault (OpenAI's
    `param`), `code` a machine-readable reason. Subclasses fix the status; the message says what to change.
    """

    http_status: int = 400
    code: Optional[str] = None

    def __init__(self, message: str, param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class PromptTooLongError(RequestError):
    """The prompt does not fit the context limit."""

    http_status = 413
    code = "context_length_exceeded"


class OverloadedError(RequestError):
    """Too many requests are waiting; the client should retry later."""

    http_status = 503
    code = "overloaded"


MEMORY_FLAGS = ("--kv-cache-gb, --max-model-len or --max-running-requests (--hicache-size for the host tier, "
                "--piecewise-cuda-graph-max-tokens for the prefill passes a GPU captures)")
_ALLOCATION = re.compile(r"allocate ([0-9.]+) ?(bytes|[KMGT]iB)", re.IGNORECASE)
_UNITS = {"bytes": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def is_out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in text or "out of memory" in text)


def describe_startup_error(e: BaseException) -> str:
    """One line saying why the engine could not start; an allocation failure names the flags that size memory
    instead of quoting the allocator."""
    if is_out_of_memory(e):
        m = _ALLOCATION.search(str(e))
        size = f" ({float(m.group(1)) * _UNITS[m.group(2).lower()] / 2**30:.1f} GiB requested)" if m else ""
        return f"out of memory while building the engine{size}: lower {MEMORY_FLAGS}"
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")
