"""`ReqToTokenTable`: maps (request row, position) to a KV slot (and to the token id there), on the device."""
from __future__ import annotations

import torch


class ReqToTokenTable:
    """Two int32 tables `[max_reqs + 1, max_len]` on the device, one row per running request: `table` holds
    KV slots and `token_ids` the tokens (the sampler writes there, so decode inputs never round-trip through
    the host). The last row is a dummy for padded batches; it points at the scratch page. Rows are handed
    out by the controller (`KVCacheManager.admit`); this object only holds the device side."""

    def __init__(self, max_reqs: int, max_len: int, device: torch.device) -> None:
        self.max_reqs = max_reqs
        self.max_len = max_len
        self.table = torch.zeros((max_reqs + 1, max_len), dtype=torch.int32, device=device)
        self.token_ids = torch.zeros((max_reqs + 1, max_len), dtype=torch.int32, device=device)

    def write(self, rows: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor) -> None:
        """Point `(rows[i], positions[i])` at `slots[i]` (one scatter)."""
        if rows.numel():
            self.table[rows, positions] = slots
