"""`benchmarks/idle_gap_serve.py` on a tiny model served on the CPU: one server, one line per pause, token-id
prompts (the server is started without a tokenizer), and the server gone afterwards."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import first_request_serve  # noqa: E402
import idle_gap_serve  # noqa: E402


def test_one_line_per_pause_through_a_server(tiny_qwen3, capsys, monkeypatch):
    ports: list[int] = []
    free_port = first_request_serve.free_port
    monkeypatch.setattr(first_request_serve, "free_port", lambda: ports.append(free_port()) or ports[-1])
    idle_gap_serve.main(["--model", str(tiny_qwen3), "--code", str(ROOT), "--gaps", "0,0.01", "--repeats", "2",
                         "--", "--device", "cpu", "--skip-tokenizer-init"])
    head, *rows = capsys.readouterr().out.splitlines()
    assert head.startswith("serve flags: --device cpu --skip-tokenizer-init;")
    assert [r.split()[1] for r in rows] == ["0.00", "0.01"]
    for r in rows:
        median, spread = r.split(":")[1].split()
        low, high = map(float, spread.strip("()").split("-"))
        assert 0 < low <= float(median) <= high
    with socket.socket() as s:  # the server was stopped: nothing listens on its port (closed connections may linger)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", ports[0]))
        s.listen()
