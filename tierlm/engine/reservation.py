"""KV that a request counts on beyond the pages it holds (`--reserve-new-tokens`): what admission keeps free.

Summed over every running request when a prefill step may admit one and the pool is tight enough for the sum to
matter (`BudgetPages` says when), so each is plain arithmetic on the request's fields (no properties, no manager
calls): it runs for hundreds of requests per step.
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


def budget_pages(req: Req, page_size: int) -> int:
    """Pages of `req`'s whole budget (prompt + max new tokens): no reservation of it is ever larger."""
    return -(-req.max_seq_len // page_size)


class BudgetPages:
    """`budget_pages` summed over the running requests, kept as they join and leave: an upper bound of
    `reserved_pages` (a reservation is within the budget's pages less those held), so admission sums the exact
    reservations only when free room is short of this bound."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.total = 0
        self._each: dict[str, int] = {}

    def add(self, req: Req) -> None:
        pages = budget_pages(req, self.page_size)
        self._each[req.request_id] = pages
        self.total += pages

    def drop(self, req: Req) -> None:
        self.total -= self._each.pop(req.request_id, 0)

    def admits(self, req: Req, available_pages: int, reserve: int) -> bool:
        """Whether admitting `req` next to the running requests' reservations taken as this bound gives the verdict
        the exact sum gives: `available_pages` (before its prefix match locks any of them: the match leaves at least
        that many less its matched pages, which it does not need) cover its target's pages and the bound."""
        return available_pages >= -(-target_len(req, reserve) // self.page_size) + self.total
