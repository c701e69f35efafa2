"""KV that a request counts on beyond the pages it holds (`--reserve-new-tokens`): what admission keeps free.

Summed over every running request whenever a prefill step may admit one, so each is plain arithmetic on the
request's fields (no properties, no manager calls): it runs for hundreds of requests per step.
"""
from __future__ import annotations

from typing import Iterable

from tierlm.engine.request import Req


def target_len(req: Req, reserve: int) -> int:
    """Tokens of KV reserved for `req`: its whole budget (prompt + max new tokens) when `reserve` is 0, else its
    prompt plus `reserve` new tokens, within that budget and never below what it holds already."""
    budget = req.prompt_len + req.max_new_tokens
    if reserve <= 0:
        return budget
    return max(len(req.token_ids) + req.num_pending, min(budget, req.prompt_len + reserve))


def reservation(req: Req, page_size: int, reserve: int) -> int:
    """Pages `req` still counts on beyond those it holds."""
    return max(0, -(-target_len(req, reserve) // page_size) - len(req.pages))


def reserved_pages(running: Iterable[Req], page_size: int, reserve: int) -> int:
    """`reservation` summed over `running`."""
    return sum(reservation(r, page_size, reserve) for r in running)
