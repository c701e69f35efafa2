"""Decode scratch: index tensors handed to the kernels start on 16-byte boundaries; batches from a size on
carry their requests' longest-first order, eager and replayed alike."""
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
    scratch.init_graph(8, dummy_row=99)
    replay = scratch.for_replay(torch.arange(4, dtype=torch.int32), lens[1:])
    assert lens[1:][replay.order].tolist() == [300, 90, 7, 7]
    never = DecodeScratch(heads=2, width=4, splits=lambda bs: 1, device=torch.device("cpu"))
    assert never.for_batch(torch.arange(5, dtype=torch.int32), lens).order is None
