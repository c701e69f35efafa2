"""Programmatic dependent launch (PDL) of the decode-path kernels, on Hopper and later GPUs.

A decode step at small batch is a chain of short kernels, and each normally starts only once the one before
it has finished and its writes are flushed: the launch, the first memory round trips and the last programs'
tail are paid once per kernel. Launched with PDL, a kernel starts while its predecessor still runs, reads
what cannot depend on it (weights, the step's KV slots and lengths uploaded before the step) and then waits
(`griddepcontrol.wait`) for the predecessor's writes.

The contract every kernel launched this way keeps:
- each program tells the next kernel it may start (`gdc_launch_dependents`) and then, before it exits,
  waits (`gdc_wait`), so it never finishes before its predecessor: completion stays ordered along the chain;
- before the wait it reads only memory that no kernel of the current chain writes (weights, rotary tables,
  KV pages of earlier steps, the request table and lengths written before the step's first kernel);
- it writes nothing before the wait.
Kernels launched without PDL (torch's, cuBLAS's, copies) keep full stream order, so a chain can mix both.
Set `TIERLM_PDL=0` to launch everything without it (for A/B timing or when debugging a kernel).
"""
from __future__ import annotations

import functools
import os

import torch

ENV = "TIERLM_PDL"


def pdl_enabled(device: torch.device) -> bool:
    """Whether kernels on `device` are launched with PDL: an NVIDIA GPU of compute capability 9.0 or later,
    unless `TIERLM_PDL=0` (ROCm devices also report as "cuda", with capabilities of their own numbering)."""
    if device.type != "cuda" or torch.version.hip is not None or os.environ.get(ENV, "1") == "0":
        return False
    return _sm_major(torch.cuda.current_device() if device.index is None else device.index) >= 9


@functools.lru_cache(maxsize=None)
def _sm_major(index: int) -> int:
    """A device's compute capability major (a fixed fact; asked on every eager launch, so asked once)."""
    return torch.cuda.get_device_capability(index)[0]


def launch_kwargs(device: torch.device) -> dict:
    """What a PDL-aware Triton kernel's launch adds for `device`: its `PDL` constexpr and, when set, the
    launch option."""
    enabled = pdl_enabled(device)
    return {"PDL": enabled, **launch_options(enabled)}


def launch_options(enabled: bool) -> dict:
    """Extra launch keywords of a Triton kernel: `launch_pdl` only when enabled (older launchers lack it)."""
    return {"launch_pdl": True} if enabled else {}
