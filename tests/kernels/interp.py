"""Run kernel cases under Triton's interpreter in a child process, so this pytest process never imports
Triton with TRITON_INTERPRET=1 (Triton picks interpreted vs compiled when a kernel is decorated)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def gpu_available() -> bool:
    return torch.cuda.is_available()


def run_interpreted(module: str, names: list[str], timeout: float = 300) -> dict[str, str]:
    """`python -m module NAME...` with TRITON_INTERPRET=1 and no visible GPU; returns its JSON result map."""
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", module, *names], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"interpreter run of {module} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])
