"""Run kernel cases under Triton's interpreter in a child process, so this pytest process never imports
Triton with TRITON_INTERPRET=1 (Triton picks interpreted vs compiled when a kernel is decorated)."""
from __future__ import annotations

import functools
import json
from typing import Callable
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def gpu_available() -> bool:
    return torch.cuda.is_available()


_PROBE = """
import torch, triton, triton.language as tl
@triton.jit
def fill(n_ptr, out_ptr):
    for i in tl.range(0, tl.load(n_ptr)):
        tl.store(out_ptr + i, i)
out = torch.zeros(4, dtype=torch.int32)
try:
    fill[(1,)](torch.tensor([3], dtype=torch.int32), out)
except Exception as e:
    print("scalar" if "0-dimensional" in str(e) else "other")
else:
    print("ok" if out.tolist() == [0, 1, 2, 0] else "other")
"""


@functools.lru_cache(maxsize=None)
def interpreter_gap() -> str:
    """Why this Triton's interpreter cannot run the engine's kernels, or "" when it can. Triton 3.6's interpreter
    takes `int()` of a one-element array for a loop bound loaded from memory, which NumPy 2.4 and later refuse."""
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    if proc.stdout.strip() != "scalar":
        return ""
    import numpy
    import triton

    return (f"Triton {triton.__version__}'s interpreter cannot run a loop bounded by a loaded value with NumPy "
            f"{numpy.__version__} (only 0-dimensional arrays convert to Python scalars)")


def run_interpreted(module: str, names: list[str], timeout: float = 300) -> dict[str, str]:
    """`python -m module NAME...` with TRITON_INTERPRET=1 and no visible GPU; returns its JSON result map.
    Skips the calling test where the installed interpreter cannot run the kernels (`interpreter_gap`)."""
    gap = interpreter_gap()
    if gap:
        pytest.skip(gap)
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", module, *names], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"interpreter run of {module} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


def assert_case_ok(name: str, request, on_gpu: Callable[[], dict[str, str]], fixture: str = "interpreted") -> None:
    """Check case `name`: run by `on_gpu()` where CUDA is present, else read from the module's interpreted
    results (the session fixture `fixture`, one child process for all cases); every variant must say ok."""
    if gpu_available():
        results = on_gpu()
    else:
        results = {k: v for k, v in request.getfixturevalue(fixture).items() if k.startswith(name + "[")}
    assert results, f"case {name} did not run"
    assert_all_ok(results)


def assert_all_ok(results: dict[str, str]) -> None:
    """Every case variant of a `run` result map says ok; else fail with their tracebacks."""
    failed = {k: v for k, v in results.items() if v != "ok"}
    assert not failed, "\n".join(f"{k}:\n{v}" for k, v in failed.items())


def run_script(script: str, timeout: float = 300, interpreted: bool = False) -> None:
    """Run a self-checking script in a child process (under the interpreter without CUDA, or always with
    `interpreted`: a script whose kernels take CPU tensors, skipped where the interpreter cannot run them,
    `interpreter_gap`); it prints ok."""
    env = dict(os.environ)
    if interpreted:
        gap = interpreter_gap()
        if gap:
            pytest.skip(gap)
        env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    elif not gpu_available():
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
