"""`ReqToTokenTable`: maps (request row, position) to a KV slot (and to the token id there), on the device."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:
    from tierlm.kernels.launch import CachedLaunch


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
        # both tables' scatters on CUDA (slot writes and token stores run every step); None elsewhere
        self._launch: Optional["CachedLaunch"] = None
        if self.table.is_cuda:
            from tierlm.kernels.step_metadata import scatter_launch

            self._launch = scatter_launch(self.table.device)

    def write(self, rows: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor) -> None:
        """Point `(rows[i], positions[i])` at `slots[i]` (one scatter; indices of any integer dtype)."""
        self._scatter(self.table, rows, positions, slots, self._launch)

    @staticmethod
    def _scatter(table: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, values: torch.Tensor,
                 launch: Optional["CachedLaunch"] = None) -> None:
        """`table[rows[i], positions[i]] = values[i]`: one kernel on CUDA (the int32 indices as uploaded, no
        widening launches; through `launch`, a `CachedLaunch` of it, when given), torch indexing elsewhere."""
        if not rows.numel():
            return
        if table.is_cuda:
            from tierlm.kernels.step_metadata import scatter_2d

            scatter_2d(table, rows, positions, values, launch)
        else:
            table[rows.long(), positions.long()] = values.to(table.dtype)

    def write_tokens(self, rows: torch.Tensor, positions: torch.Tensor, tokens: torch.Tensor) -> None:
        """Store sampled `tokens` (any integer dtype) at `(rows[i], positions[i])` of the token table."""
        self.token_sink(rows, positions).write(tokens)

    def token_sink(self, rows: torch.Tensor, positions: torch.Tensor) -> "TokenSink":
        """Where a pass's sampled tokens go: token `i` to `(rows[i], positions[i])` of the token table."""
        return TokenSink(self.token_ids, rows, positions, self._launch)


@dataclass(frozen=True)
class TokenSink:
    """Sites of a pass's sampled tokens in a device table: token `i` goes to `table[rows[i], positions[i]]`. A
    sampler that computes the tokens in a kernel of its own writes them there in the same launch; others call
    `write`."""

    table: torch.Tensor
    rows: torch.Tensor
    positions: torch.Tensor
    launch: Optional["CachedLaunch"] = None  # the table's scatter launch (`ReqToTokenTable._launch`)

    def write(self, tokens: torch.Tensor) -> None:
        """Store `tokens` (any integer dtype) at the sites."""
        ReqToTokenTable._scatter(self.table, self.rows, self.positions, tokens, self.launch)
