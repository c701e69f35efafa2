"""Helpers for the server tests: a live `tierlm serve` subprocess on a free port, with its log in a file."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import httpx

ENGINE_FLAGS = ["--device", "cpu", "--dtype", "float32", "--kv-cache-gb", "0.01", "--page-size", "4"]
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """Direct child processes of `pid` that are still running (zombies excluded)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def cmdline(pid: int) -> bytes:
    """A process's command line (NUL-separated), or b"" once it is gone."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


class ServerProcess:
    """`python -m tierlm serve` in a subprocess, with its log in a file and helpers to reach it."""

    def __init__(self, model_dir: Path, log_path: Path, *extra: str, new_session: bool = False,
                 env: Optional[dict[str, str]] = None):
        self.model = str(model_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "w")
        cmd = [sys.executable, "-m", "tierlm", "serve", "--model", self.model, *ENGINE_FLAGS,
               "--port", str(self.port), *extra]
        # new_session: the server leads its own process group, so a test can signal the group as a service
        # manager does (never the test's own group).
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                     start_new_session=new_session)
        self.engine_pids: list[int] = []

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    self.engine_pids = children_of(self.proc.pid)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log_text()}")

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stats(self) -> dict:
        r = httpx.get(self.url + "/stats", timeout=30)
        r.raise_for_status()
        return r.json()

    def stop(self, timeout: float = 30) -> Optional[int]:
        """SIGTERM, wait; returns the exit code (kills and fails loudly if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"server ignored SIGTERM for {timeout}s:\n{self.log_text()}")
        self.log.close()
        return self.proc.returncode


def start_server(model_dir: Path, tmp_dir: Path, *extra: str, env: Optional[dict[str, str]] = None) -> ServerProcess:
    """Start a server on the tiny model with the CPU test flags plus `extra` (and `env` over the process's
    environment), and wait until /health is 200."""
    return ServerProcess(model_dir, tmp_dir / "server.log", *extra, env=env).wait_ready()
