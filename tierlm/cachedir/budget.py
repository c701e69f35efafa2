"""The byte budget of the cache root: ``TIERLM_CACHE_MAX_GB`` (GiB) or a size given on the command line.

Both are checked here, so that a bad value is one message naming the variable or the flag, never a
traceback, and so that ``--max-size 20`` cannot quietly mean 20 bytes and empty the cache.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Optional

from tierlm.cachedir.fsutil import parse_size

BUDGET_VAR = "TIERLM_CACHE_MAX_GB"


def budget_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """Bytes allowed by ``TIERLM_CACHE_MAX_GB`` (None when unset); ValueError naming it when malformed."""
    env = os.environ if environ is None else environ
    text = env.get(BUDGET_VAR, "").strip()
    if not text:
        return None
    try:
        gib = float(text)
    except ValueError:
        gib = math.nan
    if not math.isfinite(gib) or gib < 0:
        raise ValueError(f"{BUDGET_VAR}={env[BUDGET_VAR]!r} is not a size in GiB (e.g. 20 or 0.5)")
    return int(gib * (1 << 30))


def parse_budget(text: str, flag: str = "--max-size") -> int:
    """Bytes for a command-line size that must carry a unit (``20G``, ``500M``, ``2048B``; ``0`` alone is
    fine). ValueError naming `flag` otherwise: a bare ``20`` is ambiguous, bytes to `parse_size` but
    GiB to ``TIERLM_CACHE_MAX_GB``."""
    try:
        size = parse_size(text, require_unit=True)
    except ValueError as e:
        raise ValueError(f"{flag} {text}: {e}") from None
    return size
