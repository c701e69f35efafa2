"""L3 stores that misbehave on one tensor-parallel rank only (opened by every rank as `module:Class?...`)."""
from __future__ import annotations

import os
import time
from typing import Sequence

from tierlm.kvcache.stores.file import FileKVStore


def this_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


class OneRankFaultyStore(FileKVStore):
    """A file store whose reads on rank `rank` raise (`mode=fail`), or stall (`mode=stall`) for `delay`
    seconds or, with `gate`, for as long as that file exists (at most 60 s); existence checks answer
    truthfully everywhere, so the prefetch starts and then fails or stalls on one rank only."""

    def __init__(self, dir: str, mode: str = "fail", rank: str = "1", delay: str = "3", gate: str = "") -> None:
        super().__init__(dir, 1 << 30)
        self.faulty = this_rank() == int(rank)
        self.mode, self.delay, self.gate = mode, float(delay), gate

    def batch_get(self, keys: Sequence[str], host_pages: Sequence[int]) -> list[bool]:
        if self.faulty and self.mode == "fail":
            raise ConnectionError("injected failure of this rank's store")
        if self.faulty and self.mode == "stall":
            if self.gate:
                deadline = time.monotonic() + 60
                while os.path.exists(self.gate) and time.monotonic() < deadline:
                    time.sleep(0.05)
            else:
                time.sleep(self.delay)
        return super().batch_get(keys, host_pages)
