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
    """A scheduler over a tight pool driven without a model (prompts sharing a prefix, so admissions match cached
    pages; a partial reservation, so requests retract and come back; with a host tier, its backups and
    load-backs each step): the table entries its steps queue, applied in order, hold the slot of every position
    each batch's requests read or write (below `kv_len + n`), and of every position of every page a running
    request holds."""
    import random

    from tests.kvcache.tiers import make_tiered, run_copies
    from tierlm.engine.request import Req
    from tierlm.engine.scheduler import Scheduler
    from tierlm.kvcache.manager import KVCacheManager
    from tierlm.sampling_params import SamplingParams

    rng = random.Random(seed)
    kv = (make_tiered(PAGE, 64, 48, max_reqs=12, threads=False, write_threshold=1)[0] if tiered
          else KVCacheManager(64, PAGE, max_reqs=12, enable_prefix_cache=True))
    sched = Scheduler(kv, 12, 48, reserve_new_tokens=reserve)
    table: dict[tuple[int, int], int] = {}
    shared = [rng.randrange(1, 99) for _ in range(12)]
    checked = 0
    for step in range(5000):
        if step >= 300 and not sched.has_work():
            break
        if step < 300 and rng.random() < 0.5:
            prompt = shared[:rng.randrange(0, 12)] + [rng.randrange(1, 99) for _ in range(rng.randrange(1, 40))]
            max_new = rng.randrange(1, 60)
            sched.add(Req(f"q{step}", len(prompt), prompt, SamplingParams(max_tokens=max_new), max_new))
        batch, _ = sched.schedule()
        if tiered:
            run_copies(kv)
        if batch is None:
            continue
        table.update(zip(zip(batch.map_rows, batch.map_positions), batch.map_slots))
        for r, n in zip(batch.reqs, batch.extend_lens):
            assert all(table.get((r.row, p)) == slot(r.pages, p) for p in range(r.kv_len + n)), (step, r.request_id)
            checked += 1
        for r in sched.running:
            assert all(table.get((r.row, p)) == slot(r.pages, p) for p in range(len(r.pages) * PAGE)), step
        for r, n in zip(batch.reqs, batch.extend_lens):
            r.kv_len += n
            if r.kv_len == r.seq_len:
                r.token_ids.append(rng.randrange(1, 99))
                r.decodable = True
                if len(r.token_ids) - r.prompt_len >= r.max_new_tokens:
                    r.finish_reason = "length"
                    sched.remove(r, cache=True)
    assert not sched.has_work() and checked > 1000
    assert sched.num_retracted > 0 or reserve == 0
