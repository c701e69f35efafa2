"""A two-"node" tensor-parallel server on loopback: node 0 serves HTTP and runs rank 0, node 1 runs rank 1."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.conftest import CPU_OPTS
from tests.server.helpers import ENGINE_FLAGS, ServerProcess, children_of, cmdline, free_port
from tierlm import LLM, SamplingParams

PROMPT = "the quick brown fox jumps over the lazy dog"


def _two_nodes(model: Path, tmp_path: Path) -> tuple[subprocess.Popen, IO[str], ServerProcess]:
    """Node 1 (`serve --node-rank 1`, its log in node1.log) and node 0's server, started, not yet ready."""
    multi = ["--tp-size", "2", "--nnodes", "2", "--dist-init-addr", f"127.0.0.1:{free_port()}"]
    node1_log = open(tmp_path / "node1.log", "w")
    node1 = subprocess.Popen([sys.executable, "-m", "tierlm", "serve", "--model", str(model), *ENGINE_FLAGS,
                              *multi, "--node-rank", "1"], stdout=node1_log, stderr=subprocess.STDOUT,
                             env={**os.environ})
    return node1, node1_log, ServerProcess(model, tmp_path / "node0.log", *multi, "--node-rank", "0")


@pytest.mark.timeout(240)
def test_two_node_launch_serves_a_request(tiny_qwen3, tmp_path):
    ref = LLM(str(tiny_qwen3), **CPU_OPTS)
    expected = ref.generate([PROMPT], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0].text
    ref.close()
    node1, node1_log, server = _two_nodes(tiny_qwen3, tmp_path)
    try:
        server.wait_ready()
        r = httpx.post(server.url + "/v1/completions", timeout=60,
                       json={"model": str(tiny_qwen3), "prompt": PROMPT, "max_tokens": 8, "temperature": 0,
                             "ignore_eos": True})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == expected
        ranks = server.stats()["ranks"]
        assert [x["rank"] for x in ranks] == [0, 1]
        assert "+ 1 more ranks (--tp-size 2, 2 node(s))" in server.log_text()
        info = httpx.get(server.url + "/server_info", timeout=10).json()
        assert (info["tp_size"], info["dp_size"]) == (2, 1), info  # what a router reads of the replica
    finally:
        server.stop()
        try:
            assert node1.wait(timeout=60) == 0, (tmp_path / "node1.log").read_text()
        finally:
            if node1.poll() is None:
                node1.kill()
            node1_log.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("victim", ["controller", "worker"])
def test_a_lost_node_stops_both_with_status_1(tiny_qwen3, tmp_path, victim):
    """Node 0's engine (the controller, rank 0) or node 1's rank killed: node 0's server and node 1's launcher
    both exit 1, so a supervisor of either node sees a failure rather than a clean exit or a server that fails
    every request."""
    node1, node1_log, server = _two_nodes(tiny_qwen3, tmp_path)
    try:
        server.wait_ready()
        engine = next(pid for pid in children_of(server.proc.pid) if b"spawn_main" in cmdline(pid))
        os.kill(engine if victim == "controller" else children_of(node1.pid)[0], signal.SIGKILL)
        assert node1.wait(timeout=60) == 1, (tmp_path / "node1.log").read_text()
        assert server.proc.wait(timeout=60) == 1, server.log_text()
    finally:
        server.stop()
        if node1.poll() is None:
            node1.kill()
            node1.wait()
        node1_log.close()
    if victim == "controller":
        assert "the controller is gone" in (tmp_path / "node1.log").read_text()
    else:
        assert "the engine cannot serve any more (rank 1:" in server.log_text()


def test_node_flags_are_checked(tiny_qwen3):
    out = subprocess.run([sys.executable, "-m", "tierlm", "serve", "--model", str(tiny_qwen3), "--tp-size", "2",
                          "--nnodes", "2"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "--dist-init-addr: required with --nnodes > 1" in out.stderr
    assert "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "tierlm", "serve", "--model", str(tiny_qwen3), "--tp-size", "3",
                          "--nnodes", "2", "--dist-init-addr", "127.0.0.1:1"], capture_output=True, text=True,
                         timeout=60)
    assert "--tp-size: 3 ranks cannot be spread evenly over --nnodes 2" in out.stderr
