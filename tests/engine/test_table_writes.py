"""`TableWrites`: the table entries a step queues, whole pages at a time, checked against the slot formula; and the
scheduler's invariant that every position a running request's pages hold has its entry."""
from __future__ import annotations

import pytest

from tierlm.engine.table_writes import TableWrites

PAGE = 4


def slot(pages: list[int], pos: int) -> int:
    return pages[pos // PAGE] * PAGE + pos % PAGE


@pytest.mark.parametrize("first", [0, 1, 2, 3])
def test_pages_from_writes_every_position_of_the_pages_from_first(first):
    pages = [7, 2, 9]
    w = TableWrites(PAGE)
    w.pages_from(3, pages, first)
    positions = list(range(first * PAGE, len(pages) * PAGE))
    assert w.lists() == ([3] * len(positions), positions, [slot(pages, p) for p in positions])


def test_entries_accumulate_in_call_order():
    w = TableWrites(PAGE)
    w.pages_from(2, [5], 0)
    w.pages_from(4, [3, 1], 1)
    w.pages_from(2, [5, 8], 1)
    assert w.lists() == ([2] * 4 + [4] * 4 + [2] * 4, [0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7],
                         [20, 21, 22, 23, 4, 5, 6, 7, 32, 33, 34, 35])


@pytest.mark.parametrize("tiered", [False, True])
@pytest.mark.parametrize("reserve,seed", [(0, 1), (8, 2), (8, 3)])
def test_every_token_a_pass_reads_or_writes_has_its_entry(tiered, reserve, seed):
    """A scheduler over a tight pool driven without a model (admissions matching cached pages; with a partial
    reservation, requests retracted and coming back; with a host tier, its backups and load-backs): the table
    entries its steps queue, applied in order, hold the slot of every position each batch's requests read or
    write (below `kv_len + n`), and of every position of every page a running request holds."""
    from tests.engine.model_free import PAGE as FREE_PAGE, drive, tight_scheduler

    assert FREE_PAGE == PAGE
    sched = tight_scheduler(reserve, tiered)
    table: dict[tuple[int, int], int] = {}
    checked = []

    def check(step, batch, refused, copies) -> None:
        if batch is None:
            return
        table.update(zip(zip(batch.map_rows, batch.map_positions), batch.map_slots))
        for r, n in zip(batch.reqs, batch.extend_lens):
            assert all(table.get((r.row, p)) == slot(r.pages, p) for p in range(r.kv_len + n)), (step, r.request_id)
            checked.append(1)
        for r in sched.running:
            assert all(table.get((r.row, p)) == slot(r.pages, p) for p in range(len(r.pages) * PAGE)), step

    drive(sched, seed, check, tiered)
    assert len(checked) > 1000
    assert sched.num_retracted > 0 or reserve == 0
