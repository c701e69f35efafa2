"""`ReqToTokenTable`'s two scatters on the CPU (torch indexing; CUDA takes `kernels.step_metadata`, checked in
tests/kernels/test_step_metadata.py): int32 indices as uploaded, tokens of any integer dtype, nothing else moved."""
from __future__ import annotations

import torch

from tierlm.kvcache.req_table import ReqToTokenTable


def test_writes_take_int32_indices_and_leave_other_entries():
    t = ReqToTokenTable(max_reqs=3, max_len=8, device=torch.device("cpu"))
    rows, pos = torch.tensor([0, 2], dtype=torch.int32), torch.tensor([7, 1], dtype=torch.int32)
    t.write(rows, pos, torch.tensor([41, 42], dtype=torch.int32))
    t.write_tokens(rows, pos, torch.tensor([5, 2**31 - 1], dtype=torch.int64))  # the sampler's int64 tokens
    t.write(rows[:0], pos[:0], torch.zeros(0, dtype=torch.int32))  # nothing to write
    assert t.table.dtype == t.token_ids.dtype == torch.int32
    assert t.table[0, 7] == 41 and t.table[2, 1] == 42 and int(t.table.sum()) == 83
    assert t.token_ids[0, 7] == 5 and t.token_ids[2, 1] == 2**31 - 1 and int((t.token_ids != 0).sum()) == 2
