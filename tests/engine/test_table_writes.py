"""`TableWrites`: the table entries a step queues, a span of one token or more, checked against the slot formula."""
from __future__ import annotations

import pytest

from tierlm.engine.table_writes import TableWrites

PAGE = 4


def slot(pages: list[int], pos: int) -> int:
    return pages[pos // PAGE] * PAGE + pos % PAGE


@pytest.mark.parametrize("start,end", [(0, 1), (3, 4), (0, 12), (2, 9), (5, 6), (4, 8)])
def test_span_matches_the_slot_of_every_position(start, end):
    pages = [7, 2, 9]
    w = TableWrites(PAGE)
    w.span(3, pages, start, end)
    assert w.lists() == ([3] * (end - start), list(range(start, end)), [slot(pages, p) for p in range(start, end)])


def test_spans_of_one_match_the_formula_and_entries_accumulate():
    pages = [5, 1]
    w = TableWrites(PAGE)
    for pos in range(8):
        w.span(2, pages, pos, pos + 1)
    w.span(4, [3], 0, 3)
    assert w.lists() == ([2] * 8 + [4] * 3, list(range(8)) + [0, 1, 2],
                         [slot(pages, p) for p in range(8)] + [12, 13, 14])


def test_pages_that_do_not_cover_the_span_raise():
    with pytest.raises(IndexError, match="do not hold positions up to 9"):
        TableWrites(PAGE).span(0, [1, 2], 0, 9)
    with pytest.raises(IndexError):
        TableWrites(PAGE).span(0, [1], 4, 5)
