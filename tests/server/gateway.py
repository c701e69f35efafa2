"""SGLang's router (the `sglang-router` wheel, a Rust binary) as a test subprocess on free loopback ports, in
front of `tierlm serve` replicas; its log goes to a file."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.server.helpers import free_port

START_TIMEOUT_S = 60


class Gateway:
    """`python -m sglang_router.launch_router` over `workers` with `policy`; `url` takes OpenAI requests."""

    def __init__(self, workers: list[str], log_path: Path, policy: str = "cache_aware", *extra: str):
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "w")
        # The router also serves Prometheus metrics on a port of its own (29000 by default): a free one here.
        cmd = [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(self.port),
               "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
               "--worker-urls", *workers, "--policy", policy, "--log-level", "warn", *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> "Gateway":
        """Wait until the router has probed and registered every worker as healthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                r = httpx.get(self.url + "/readiness", timeout=2)
                if r.status_code == 200 and r.json().get("healthy_workers") == len(self.workers):
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"router not ready after {timeout}s:\n{self.log_text()}")

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
