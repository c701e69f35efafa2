"""Decode scratch: index tensors handed to the kernels start on 16-byte boundaries; batches from a size on
carry their requests' longest-first order, eager and replayed alike; a replay reads the runner's static rows and
lengths in place."""
from __future__ import annotations

import torch

from tierlm.attention.decode_scratch import DecodeScratch


def test_a_mixed_pass_tail_is_realigned_and_keeps_its_values():
    scratch = DecodeScratch(heads=4, width=8, splits=lambda bs: 2, device=torch.device("cpu"))
    rows, lens = torch.arange(10, dtype=torch.int32), torch.arange(100, 110, dtype=torch.int32)
    meta = scratch.for_batch(rows[3:], lens[3:])  # 12 bytes in: not aligned
    assert meta.req_rows.data_ptr() % 16 == 0 and meta.seq_lens.data_ptr() % 16 == 0
    assert meta.req_rows.tolist() == list(range(3, 10)) and meta.seq_lens.tolist() == list(range(103, 110))
    assert meta.mid_o.shape == (7, 4, 2, 8) and meta.mid_lse.shape == (7, 4, 2)
    aligned = rows[4:]
    assert scratch.for_batch(aligned, lens[4:]).req_rows.data_ptr() == aligned.data_ptr()  # no copy needed


def test_batches_from_the_threshold_on_are_ordered_longest_first():
    scratch = DecodeScratch(heads=2, width=4, splits=lambda bs: 1, device=torch.device("cpu"), order_from=3)
    lens = torch.tensor([5, 90, 7, 300, 7], dtype=torch.int32)
    meta = scratch.for_batch(torch.arange(5, dtype=torch.int32), lens)
    assert meta.order is not None and sorted(meta.order.tolist()) == list(range(5))
    assert lens[meta.order].tolist() == [300, 90, 7, 7, 5]
    assert scratch.for_batch(torch.arange(2, dtype=torch.int32), lens[:2]).order is None  # below: as they come
    scratch.init_graph(8)
    replay = scratch.for_replay(torch.arange(4, dtype=torch.int32), lens[1:])
    assert lens[1:][replay.order].tolist() == [300, 90, 7, 7]
    never = DecodeScratch(heads=2, width=4, splits=lambda bs: 1, device=torch.device("cpu"))
    assert never.for_batch(torch.arange(5, dtype=torch.int32), lens).order is None


def test_a_replay_reads_the_runners_static_rows_and_lengths_in_place():
    """A captured pass's kernels read the graph runner's buffers, which it refreshes before every replay: no copy
    of them in the graph (an unaligned tail, as a mixed pass's decodes may be, is still realigned)."""
    scratch = DecodeScratch(heads=4, width=8, splits=lambda bs: 3, device=torch.device("cpu"))
    scratch.init_graph(16)
    rows, lens = torch.full((16,), 7, dtype=torch.int32), torch.ones(16, dtype=torch.int32)
    meta = scratch.for_replay(rows[:8], lens[:8])
    assert meta.req_rows.data_ptr() == rows.data_ptr() and meta.seq_lens.data_ptr() == lens.data_ptr()
    assert meta.mid_o.shape == (8, 4, 3, 8) and meta.mid_lse.shape == (8, 4, 3)
    rows[:8] = torch.arange(8, dtype=torch.int32)  # the runner's next step
    assert meta.req_rows.tolist() == list(range(8))
    tail = scratch.for_replay(rows[3:8], lens[3:8])
    assert tail.req_rows.data_ptr() % 16 == 0 and tail.req_rows.tolist() == list(range(3, 8))


def test_a_step_gets_a_plan_and_its_rows_only_when_marked_balanced():
    """The per-request launch reads its split count from the scratch's shape, so a step not marked balanced gets
    exactly `splits(bs)` slots (and its order), a balanced one a plan and room for the plan's items."""
    made = []

    def plan(lens: torch.Tensor) -> str:
        made.append(lens.shape[0])
        return "plan"

    scratch = DecodeScratch(heads=2, width=4, splits=lambda bs: 1, device=torch.device("cpu"), order_from=3,
                            plan=plan, plan_rows=lambda bs: 3 * bs + 1)
    lens = torch.tensor([5, 90, 7, 300, 7], dtype=torch.int32)
    rows = torch.arange(5, dtype=torch.int32)
    per_request = scratch.for_batch(rows, lens)
    assert per_request.mid_o.shape == (5, 2, 1, 4) and per_request.plan is None and per_request.order is not None
    balanced = scratch.for_batch(rows, lens, balanced=True)
    assert balanced.mid_o.shape == (5, 2, 4, 4) and balanced.plan == "plan" and balanced.order is None
    scratch.init_graph(8)
    assert scratch.for_replay(rows, lens).mid_o.shape == (5, 2, 1, 4)
    replay = scratch.for_replay(rows, lens, balanced=True)
    assert replay.mid_o.shape == (5, 2, 4, 4) and replay.mid_lse.shape == (5, 2, 4) and replay.plan == "plan"
    assert made == [5, 5]
