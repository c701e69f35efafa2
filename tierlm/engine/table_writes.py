"""`TableWrites`: the request->token table entries a scheduled step queues, written by the runner in one scatter."""
from __future__ import annotations


class TableWrites:
    """Entries (row, position, slot) of the device's request->token table that one step adds: a request's
    pages hold `page_size` consecutive slots each, so position p of a request lives in slot
    `pages[p // page_size] * page_size + p % page_size`. Kept as three flat lists (what the step plan ships)."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.rows: list[int] = []
        self.positions: list[int] = []
        self.slots: list[int] = []

    def lists(self) -> tuple[list[int], list[int], list[int]]:
        return self.rows, self.positions, self.slots

    def pages_from(self, row: int, pages: list[int], first: int) -> None:
        """Entries of every position of `pages[first:]` (whole pages, as the scheduler writes a page when it is
        taken): one range of slots per page."""
        ps = self.page_size
        self.rows.extend([row] * ((len(pages) - first) * ps))
        self.positions.extend(range(first * ps, len(pages) * ps))
        slots = self.slots
        for p in pages[first:]:
            slots.extend(range(p * ps, p * ps + ps))
