"""`HostStaging`: pinned host buffers for the per-step metadata upload (one async copy per step)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

RING = 3  # buffers in turn: a refill waits only when the device is this many uploads behind


class HostStaging:
    """Packs a step's int32 metadata into a pinned buffer and copies it to the device without a host sync.

    Buffers are used in turn, and each upload records an event after its copy: a buffer is refilled only once
    the copy that last read it has run. The engine's step order alone does not ensure that: a step that
    samples nothing (a prefill chunk, a paused split head, copies only) is never waited on, so the host can
    run several steps ahead of a device that is busy with a long forward or a load.
    """

    def __init__(self, device: torch.device, capacity: int = 1 << 16) -> None:
        self.device = device
        self.pinned = device.type == "cuda"
        self._bufs = [self._alloc(capacity) for _ in range(RING)]
        self._copied: list[Optional["torch.cuda.Event"]] = [None] * RING
        self._turn = 0

    def _alloc(self, n: int) -> torch.Tensor:
        return torch.empty(n, dtype=torch.int32, pin_memory=self.pinned)

    def upload(self, values: list[int]) -> torch.Tensor:
        """Device int32 tensor holding `values` (copied asynchronously from pinned memory on CUDA)."""
        if self.device.type != "cuda":
            return torch.from_numpy(np.array(values, dtype=np.int32))  # numpy converts a list faster
        i, self._turn = self._turn, (self._turn + 1) % RING
        if self._copied[i] is not None:
            self._copied[i].synchronize()  # its last copy has left the buffer (almost always at once)
        if len(values) > self._bufs[i].numel():
            self._bufs[i] = self._alloc(max(len(values), 2 * self._bufs[i].numel()))
        host = self._bufs[i][:len(values)]
        host.numpy()[:] = values
        out = host.to(self.device, non_blocking=True)
        self._copied[i] = torch.cuda.current_stream(self.device).record_event()
        return out
