"""`HostStaging`: pinned host buffers for the per-step metadata upload (one async copy per step)."""
from __future__ import annotations

import torch


class HostStaging:
    """Packs a step's int32 metadata into a pinned buffer and copies it to the device without a host sync.

    Two buffers alternate: a buffer is refilled only after the step that last used it has been resolved
    (the engine waits on that step's event), so an in-flight copy is never overwritten.
    """

    def __init__(self, device: torch.device, capacity: int = 1 << 16) -> None:
        self.device = device
        self.pinned = device.type == "cuda"
        self._bufs = [self._alloc(capacity), self._alloc(capacity)]
        self._turn = 0

    def _alloc(self, n: int) -> torch.Tensor:
        return torch.empty(n, dtype=torch.int32, pin_memory=self.pinned)

    def upload(self, values: list[int]) -> torch.Tensor:
        """Device int32 tensor holding `values` (copied asynchronously from pinned memory on CUDA)."""
        if self.device.type != "cuda":
            return torch.tensor(values, dtype=torch.int32)
        i, self._turn = self._turn, 1 - self._turn
        if len(values) > self._bufs[i].numel():
            self._bufs[i] = self._alloc(max(len(values), 2 * self._bufs[i].numel()))
        host = self._bufs[i][:len(values)]
        host.numpy()[:] = values
        return host.to(self.device, non_blocking=True)
