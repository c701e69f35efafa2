"""`upload`: small host values to the device without making the host wait for the stream's queued work.

CUDA runs an asynchronous host-to-device copy from pageable memory only after a sync of its stream (the
runtime's documented behaviour for pageable sources): `torch.tensor(v).to("cuda", non_blocking=True)`
issued behind a queued forward blocks the host until that forward ends, which undoes the overlap of host
and device. From pinned memory the copy is queued and the call returns at once; torch's caching host
allocator keeps the pinned block until the copy has read it.
"""
from __future__ import annotations

from typing import Sequence

import torch


def upload(values: Sequence[int] | Sequence[float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`values` as a 1-d `dtype` tensor on `device`, copied from pinned memory when `device` is a GPU."""
    if torch.device(device).type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype, pin_memory=True).to(device, non_blocking=True)
