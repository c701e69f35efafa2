"""Decode scratch of an eager pass: index tensors handed to the kernels start on 16-byte boundaries."""
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
