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

import os

import torch

ENV = "TIERLM_PDL"


def pdl_enabled(device: torch.device) -> bool:
    """Whether kernels on `device` are launched with PDL: an NVIDIA GPU of compute capability 9.0 or later,
    unless `TIERLM_PDL=0` (ROCm devices also report as "cuda", with capabilities of their own numbering)."""
    if device.type != "cuda" or torch.version.hip is not None or os.environ.get(ENV, "1") == "0":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def launch_options(enabled: bool) -> dict:
    """Extra launch keywords of a Triton kernel: `launch_pdl` only when enabled (older launchers lack it)."""
    return {"launch_pdl": True} if enabled else {}
