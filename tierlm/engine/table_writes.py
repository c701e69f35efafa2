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

    def span(self, row: int, pages: list[int], start: int, end: int) -> None:
        """Entries of positions [start, end) of `row`; `pages` must cover them (IndexError otherwise: never a
        short table silently)."""
        ps = self.page_size
        if end - start == 1:  # a decode token: most calls, so without the general path's lists
            self.rows.append(row), self.positions.append(start), self.slots.append(pages[start // ps] * ps + start % ps)
            return
        self.rows.extend([row] * (end - start))
        self.positions.extend(range(start, end))
        first = start // ps  # a page's slots are consecutive: one range per page, not Python work per token
        span = [s for p in pages[first:(end - 1) // ps + 1] for s in range(p * ps, p * ps + ps)]
        if len(span) < end - first * ps:
            raise IndexError(f"row {row}: {len(pages)} pages do not hold positions up to {end}")
        self.slots.extend(span[start - first * ps:end - first * ps])
