"""`upload(graph)`: hand a captured CUDA graph to the device before its first replay.

A graph's first launch also uploads it to the device, a cost the first request of each captured size would
otherwise pay once. The driver's `cuGraphUpload` does only that part, without running the graph's kernels (a
replay at start-up would run them, and cost start-up time for every size). Where torch does not give the graph's
executable handle, or the driver lacks the call, nothing is done and the first launch uploads as before.
"""
from __future__ import annotations

import ctypes
from typing import Optional

import torch


def upload(graph: torch.cuda.CUDAGraph, stream: Optional[torch.cuda.Stream] = None) -> bool:
    """Upload `graph` (captured, not yet replayed) in `stream` (default: the current one); whether it was."""
    handle = getattr(graph, "raw_cuda_graph_exec", None)
    if handle is None:
        return False
    try:
        exec_handle = handle()
        call = ctypes.CDLL("libcuda.so.1").cuGraphUpload
    except (OSError, AttributeError, RuntimeError):
        return False
    call.argtypes, call.restype = [ctypes.c_void_p, ctypes.c_void_p], ctypes.c_int
    stream = stream if stream is not None else torch.cuda.current_stream()
    return call(exec_handle, stream.cuda_stream) == 0  # ordered in the stream before any later launch of it
