"""`tierlm serve` as a command: grouped --help, and one-line errors (never a traceback) for bad start-ups."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

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
    exit_status = " ".join(out[out.index("Exit status:"):].split())  # what a supervisor of the server acts on
    assert "0 after SIGTERM" in exit_status and "1 when the engine process" in exit_status, exit_status


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
        assert r.json()["error"]["param"] == "prompt"
        # token-id prompts are served on /v1/completions too; a stream has a chunk per output (empty text): one per
        # token, or fewer where the frontend was behind and merged a request's waiting tokens
        body = {"model": srv.model, "prompt": [5, 6, 7], "max_tokens": 4, "ignore_eos": True, "temperature": 0}
        r = httpx.post(srv.url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4, r.text
        assert r.json()["choices"][0]["text"] == ""
        with httpx.stream("POST", srv.url + "/v1/completions", timeout=60, json={
                **body, "stream": True, "stream_options": {"include_usage": True}}) as resp:
            events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
        chunks = [e for e in events if e["choices"]]
        assert 1 <= len(chunks) <= 4 and events[-1]["usage"]["completion_tokens"] == 4
        assert chunks[-1]["choices"][0]["finish_reason"] == "length" and all(
            c["choices"][0]["text"] == "" for c in chunks)
        r = httpx.post(srv.url + "/v1/completions", json={**body, "logprobs": 1}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs"
        for path, body in (("/tokenize", {"prompt": "Hi"}), ("/detokenize", {"tokens": [5]})):
            r = httpx.post(srv.url + path, json=body, timeout=60)
            assert r.status_code == 400 and r.json()["error"]["code"] == "no_tokenizer", r.text
        assert "auth off" in srv.log_text()
    finally:
        assert srv.stop() == 0, srv.log_text()


def test_help_states_each_default_once():
    text = " ".join(tierlm("serve", "--help").stdout.split())
    assert "(default: )" not in text and "(default: None)" not in text
    assert "(default: the model's). (default" not in text


@pytest.mark.parametrize("flags, flag", [
    (["--api-key", ""], "--api-key"),
    (["--kv-cache-gb", "nan"], "--kv-cache-gb"),
    (["--hicache-ratio", "nan"], "--hicache-ratio"),
    (["--kv-store-timeout", "nan"], "--kv-store-timeout"),
    (["--kv-store", "redis://127.0.0.1:99999/0"], "--kv-store"),
    (["--request-body-timeout", "0"], "--request-body-timeout"),
    (["--watchdog-timeout", "-5"], "--watchdog-timeout"),
])
def test_invalid_flag_is_refused_before_start(tiny_qwen3, flags, flag):
    r = tierlm("serve", "--model", str(tiny_qwen3), *ENGINE_FLAGS, "--port", str(free_port()), *flags)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"tierlm serve: error: {flag}:"), r.stderr


def test_truncated_weights_name_the_file(tiny_qwen3, tmp_path):
    model = shutil.copytree(tiny_qwen3, tmp_path / "m")
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    r = tierlm("serve", "--model", str(model), *ENGINE_FLAGS, "--port", str(free_port()))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("tierlm serve: error:") and str(weights) in last, r.stderr


def test_kv_pool_beyond_memory_names_the_flag(tiny_qwen3):
    flags = [f for f in ENGINE_FLAGS if f not in ("--kv-cache-gb", "0.01")]
    r = tierlm("serve", "--model", str(tiny_qwen3), *flags, "--kv-cache-gb", "1e9", "--port", str(free_port()))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "out of memory" in last and "--kv-cache-gb" in last, r.stderr


def test_group_sigterm_exits_cleanly_and_start_up_line_states_auth(tiny_qwen3, tmp_path):
    """A service manager signals the whole process group: the engine process must not die with a leaked
    semaphore, and the server still exits 0 with no process left."""
    from tests.server.helpers import ServerProcess

    srv = ServerProcess(tiny_qwen3, tmp_path / "server.log", "--api-key", "k", new_session=True)
    try:
        srv.wait_ready()
        assert "auth API key required" in srv.log_text()
        engines = list(srv.engine_pids)
        os.killpg(srv.proc.pid, signal.SIGTERM)
    finally:
        code = srv.stop()
    assert code == 0, srv.log_text()
    deadline = time.monotonic() + 10  # the resource tracker reports leaks as it exits, after the server
    while any(_running(pid) for pid in engines) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engines and not any(_running(pid) for pid in engines)
    assert "leaked" not in srv.log_text(), srv.log_text()


@pytest.mark.timeout(180)
def test_sigterm_ends_the_streams_it_cannot_wait_for_with_an_error_event(tiny_qwen3, tmp_path):
    """Requests still open when the graceful shutdown's 5 s run out end cleanly: a stream with an OpenAI-style
    error event and [DONE], a request still queued (no answer begun) with a 503 body, never a connection cut
    mid-body; the server still exits 0. Twelve long streams run one at a time (`--max-running-requests 1`), so
    most are open at the deadline."""
    import threading

    import httpx

    from tests.server.helpers import ServerProcess

    srv = ServerProcess(tiny_qwen3, tmp_path / "server.log", "--max-running-requests", "1", new_session=True)
    ends: dict[int, object] = {}

    def stream(i: int) -> None:
        body = {"model": srv.model, "prompt": "hi", "max_tokens": 500, "ignore_eos": True, "stream": True}
        try:
            with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=60) as r:
                if r.status_code != 200:
                    ends[i] = (r.status_code, json.loads(r.read())["error"])
                    return
                events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
            ends[i] = (200, events)
        except httpx.HTTPError as e:
            ends[i] = e

    try:
        srv.wait_ready()
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while srv.stats()["requests_total"] < 12 and time.monotonic() < deadline:  # all reached the engine
            time.sleep(0.05)
        os.killpg(srv.proc.pid, signal.SIGTERM)
        for t in threads:
            t.join(60)
        code = srv.proc.wait(timeout=60)
    finally:
        srv.stop()
    assert code == 0, srv.log_text()
    cut = {i: e for i, e in ends.items() if isinstance(e, Exception)}
    assert len(ends) == 12 and not cut, cut
    streamed = [events for status, events in ends.values() if status == 200]
    refused = [err for status, err in ends.values() if status != 200]
    assert streamed and all(events[-1] == "[DONE]" for events in streamed)
    errors = [json.loads(events[-2])["error"] for events in streamed if '"error"' in events[-2]] + refused
    assert errors and all("the server is shutting down" in err["message"] for err in errors), errors
    assert all(status in (200, 503) for status, _ in ends.values()), ends


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(240)
@pytest.mark.parametrize("victim", ["engine", "rank", "hung rank"])
def test_engine_death_fails_the_stream_and_the_server_exits_1(tiny_qwen3, tmp_path, victim):
    """The engine process, or a tensor-parallel rank of it, killed mid-stream: the stream ends with an OpenAI-style
    error event and [DONE], and the server shuts down with status 1 (a supervisor then restarts it) instead of
    answering 503 (or 500 for every request, with a rank gone) for ever. A rank that stops answering without
    dying (SIGSTOP: its channel stays open) hangs the step instead, until `--watchdog-timeout` ends the engine."""
    import httpx

    from tests.server.helpers import ServerProcess, children_of, cmdline

    flags = [] if victim == "engine" else ["--tp-size", "2", "--watchdog-timeout", "3"]
    srv = ServerProcess(tiny_qwen3, tmp_path / "server.log", *flags, new_session=True)
    target = None
    try:
        srv.wait_ready()
        engine = next(pid for pid in srv.engine_pids if b"spawn_main" in cmdline(pid))
        target = engine if victim == "engine" else children_of(engine)[0]
        body = {"model": srv.model, "prompt": "hi", "max_tokens": 400, "ignore_eos": True, "stream": True}
        events = []
        with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 2:
                        os.kill(target, signal.SIGSTOP if victim == "hung rank" else signal.SIGKILL)
        assert r.status_code == 200 and events[-1] == "[DONE]", events[-3:]
        error = json.loads(events[-2])["error"]
        why = {"rank": "rank 1: the control channel"}.get(victim, "engine process died")
        assert error["code"] == "engine_error" and why in error["message"], error
        assert len(events) < 400, "the stream ran to its end: the process was not killed in time"
        code = srv.proc.wait(timeout=60)
    finally:
        if victim == "hung rank" and target is not None:
            os.kill(target, signal.SIGKILL)
        srv.stop()
    log = srv.log_text()
    assert code == 1, log
    exit_line = "exit code -9" if victim == "engine" else "exit code 1"
    assert f"the engine process died ({exit_line}): shutting the server down" in log, log
    if victim == "hung rank":
        assert "over --watchdog-timeout 3 (a hung device, or a tensor-parallel rank that stopped" in log, log
    assert "Traceback" not in log, log
    assert not _running(engine)


def test_engine_death_during_a_shutdown_is_not_a_failure():
    """A SIGTERM to the whole group: the engine exits once its requests are done, which the link's watchdog may
    see before the frontend has stopped; that is the shutdown asked for (status 0), not a dead engine."""
    from types import SimpleNamespace

    from tierlm.server.launch import _EngineDeath

    engine = SimpleNamespace(proc=SimpleNamespace(exitcode=0))
    died = _EngineDeath(engine)
    died.server = SimpleNamespace(should_exit=True)
    assert died() is False and not died.fired
    died.server.should_exit = False
    assert died() is True and died.fired and died.server.should_exit
