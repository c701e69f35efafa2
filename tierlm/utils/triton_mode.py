"""How Triton runs the kernels: compiled for a GPU, or under its CPU interpreter (`TRITON_INTERPRET=1`, which the
CPU tests use). Kernels choose small tiles and exact math under the interpreter; one place reads the switch."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI is built without importing torch; this module is imported there
    import torch


def interpreted() -> bool:
    """Whether Triton runs kernels under its interpreter."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def compiled_on_gpu(device: torch.device) -> bool:
    """Whether kernels on tensors of `device` are compiled for a GPU (a CUDA device, not interpreted)."""
    return device.type == "cuda" and not interpreted()
