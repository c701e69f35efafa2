"""How many prefill tokens join the decode tokens of a mixed step (`--min-mixed-tokens`, `--max-mixed-tokens`).

A forward pass of a few hundred tokens costs about what a decode step costs: reading the weights bounds it,
not the arithmetic. So while little prefill waits, a mixed pass fills up only to `min_tokens` (decodes
included): a prompt spreads over several passes that cost the running decodes little each, where one large
pass would stall them for the whole prompt. As prefill work piles up (a burst of arrivals), a pass takes a
`DRAIN_PASSES`-th of it instead, up to `max_tokens`, so the burst drains in a few passes and its first tokens
do not wait behind many small ones. With `min_tokens` at `max_tokens` or above, every pass takes the whole
budget.
"""
from __future__ import annotations

from typing import Iterable, Optional

DRAIN_PASSES = 4  # a mixed pass takes at least this share (1/n) of the prefill tokens waiting


def mixed_budget(decodes: int, backlog: Iterable[int], max_tokens: int, min_tokens: Optional[int],
                 max_prefill_tokens: int) -> int:
    """Prefill tokens for a mixed pass beside `decodes` decode tokens; `backlog` yields the prefill tokens
    still to compute per request (those waiting counted whole: their cached prefixes are not known before
    admission). At least 1 when `decodes < max_tokens`."""
    top = min(max_tokens - decodes, max_prefill_tokens)
    if min_tokens is None or min_tokens >= max_tokens:
        return top
    waiting = 0
    for n in backlog:
        waiting += n
        if waiting >= DRAIN_PASSES * top:  # the budget is at its top whatever else waits
            break
    return min(top, max(1, min_tokens - decodes, -(-waiting // DRAIN_PASSES)))
