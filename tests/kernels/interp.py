"""Run kernel cases under Triton's interpreter in a child process, so this pytest process never imports
Triton with TRITON_INTERPRET=1 (Triton picks interpreted vs compiled when a kernel is decorated)."""
from __future__ import annotations

import json
from typing import Callable
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


def run_script(script: str, timeout: float = 300) -> None:
    """Run a self-checking script in a child process (under the interpreter without CUDA); it prints ok."""
    env = dict(os.environ)
    if not gpu_available():
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
