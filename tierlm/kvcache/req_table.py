"""`ReqToTokenTable`: maps (request row, position) to a KV slot (and to the token id there)."""
from __future__ import annotations

import torch


class ReqToTokenTable:
    """Two int32 tables `[max_reqs + 1, max_len]` on the device, one row per running request: `table` holds
    KV slots and `token_ids` the tokens (the sampler writes there, so decode inputs never round-trip through
    the host). The last row is a dummy for padded batches; it points at the scratch page."""

    def __init__(self, max_reqs: int, max_len: int, device: torch.device) -> None:
        self.max_reqs = max_reqs
        self.max_len = max_len
        self.table = torch.zeros((max_reqs + 1, max_len), dtype=torch.int32, device=device)
        self.token_ids = torch.zeros((max_reqs + 1, max_len), dtype=torch.int32, device=device)
        self.dummy_row = max_reqs
        self._free_rows = list(range(max_reqs - 1, -1, -1))

    @property
    def num_free_rows(self) -> int:
        return len(self._free_rows)

    def alloc_row(self) -> int:
        if not self._free_rows:
            raise RuntimeError("no free request row (max_running_requests reached)")
        return self._free_rows.pop()

    def free_row(self, row: int) -> None:
        if row in self._free_rows or not 0 <= row < self.max_reqs:
            raise RuntimeError(f"bad free of request row {row}")
        self._free_rows.append(row)
