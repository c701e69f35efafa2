"""`tierlm serve` as a command: grouped --help, and one-line errors (never a traceback) for bad start-ups."""
from __future__ import annotations

import socket
import subprocess
import sys

from tests.server.helpers import ENGINE_FLAGS, free_port


def tierlm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tierlm", *args], capture_output=True, text=True, timeout=timeout)


def test_help_groups_flags():
    out = tierlm("serve", "--help").stdout
    for group in ("model options", "memory options", "scheduler options", "cache tiers options", "server options"):
        assert group in out, group
    for flag in ("--model", "--kv-cache-gb", "--max-waiting-requests", "--host", "--port", "--api-key"):
        assert flag in out
    assert out.index("server options") < out.rindex("--api-key")
    assert out.index("cache tiers options") < out.rindex("--kv-store") < out.index("server options")


def test_missing_model_dir_is_one_line(tmp_path):
    r = tierlm("serve", "--model", str(tmp_path / "nope"), *ENGINE_FLAGS, "--port", str(free_port()))
    assert r.returncode == 2, r.stderr
    assert "tierlm serve: error:" in r.stderr and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_port_in_use_is_one_line(tiny_qwen3):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = tierlm("serve", "--model", str(tiny_qwen3), *ENGINE_FLAGS, "--port", str(s.getsockname()[1]))
    assert r.returncode == 2 and "cannot listen on 127.0.0.1" in r.stderr and "Traceback" not in r.stderr


def test_bad_flag_value_is_one_line(tiny_qwen3):
    r = tierlm("serve", "--model", str(tiny_qwen3), "--page-size", "0")
    assert r.returncode == 2 and "--page-size" in r.stderr and "Traceback" not in r.stderr


def test_skip_tokenizer_init_serves_token_ids_only(tiny_qwen3, tmp_path):
    import httpx

    from tests.server.helpers import start_server

    srv = start_server(tiny_qwen3, tmp_path, "--skip-tokenizer-init")
    try:
        r = httpx.post(srv.url + "/generate", json={"input_ids": [5, 6, 7], "sampling_params": {
            "max_tokens": 3, "ignore_eos": True, "temperature": 0}}, timeout=60)
        assert r.status_code == 200 and len(r.json()["output_ids"]) == 3
        r = httpx.post(srv.url + "/v1/completions", json={"model": srv.model, "prompt": "Hi"}, timeout=60)
        assert r.status_code == 400 and "skip-tokenizer-init" in r.json()["error"]["message"]
    finally:
        assert srv.stop() == 0, srv.log_text()
