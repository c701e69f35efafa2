"""`tierlm bench serve` against live tiny `tierlm serve` processes: token-id prompts to a server without a
tokenizer (mixed steps on), text prompts (completions and chat) to one with a tokenizer; the JSON report has
every field with sane values; a dead server or a bad URL is one line, not a traceback."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import aiohttp
import httpx
import pytest

from tests.server.helpers import free_port, start_server
from tierlm.cli.bench.serve_client import CHAT, Target, send
from tierlm.cli.bench.serve_data import BenchRequest, random_requests
from tierlm.cli.main import main

SUMMARY_KEYS = {"completed", "failed", "duration_s", "total_input_tokens", "total_output_tokens",
                "request_throughput", "input_tok_per_s", "output_tok_per_s", "total_tok_per_s", "ttft_ms",
                "tpot_ms", "itl_ms", "e2el_ms", "slo", "goodput_req_per_s", "slo_attained", "errors"}
ROW_KEYS = {"sent_s", "ok", "ttft_ms", "tpot_ms", "e2el_ms", "prompt_len", "output_len", "error"}


@pytest.fixture(scope="module")
def ids_server(tiny_qwen3, tmp_path_factory):
    srv = start_server(tiny_qwen3, tmp_path_factory.mktemp("bench-ids"), "--skip-tokenizer-init",
                       "--enable-mixed-chunk", "--max-mixed-tokens", "24", "--max-prefill-tokens", "16")
    yield srv
    assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="module")
def text_server(tiny_qwen3, tmp_path_factory):
    srv = start_server(tiny_qwen3, tmp_path_factory.mktemp("bench-text"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


def bench(url: str, out, *extra: str) -> dict:
    assert main(["bench", "serve", "--base-url", url, "--json", str(out), "--disable-tqdm",
                 "--random-vocab-size", "500", *extra]) == 0
    return json.loads(out.read_text())


def check_report(r: dict, n: int) -> dict:
    s = r["summary"]
    assert set(s) == SUMMARY_KEYS
    assert s["completed"] == n and s["failed"] == 0 and not s["errors"]
    assert s["request_throughput"] > 0 and s["output_tok_per_s"] > 0 and s["duration_s"] > 0
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
        st = s[name]
        assert set(st) == {"mean", "p50", "p90", "p99"}
        if name == "itl_ms" and st["p50"] is None:
            # a stream behind the engine sends its waiting tokens in one event (a loaded machine's chat requests
            # can get all four so): no request had a gap between two events to measure
            assert set(st.values()) == {None}, st
            continue
        assert 0 < st["p50"] <= st["p90"] <= st["p99"], (name, st)
    assert s["ttft_ms"]["p99"] <= s["e2el_ms"]["p99"]
    assert len(r["requests"]) == n and all(set(row) == ROW_KEYS and row["ok"] for row in r["requests"])
    return s


def test_token_id_prompts_at_a_rate(ids_server, tmp_path, capsys):
    n = 12
    r = bench(ids_server.url, tmp_path / "r.json", "--num-prompts", str(n), "--random-input-len", "20",
              "--random-output-len", "6", "--random-range-ratio", "0.5", "--request-rate", "40",
              "--max-concurrency", "6", "--slo-ttft-ms", "600000", "--slo-tpot-ms", "600000",
              "--plot", str(tmp_path / "r.png"), "--label", "mixed")
    s = check_report(r, n)
    want = random_requests(n, 20, 6, 0.5, seed=0, vocab_size=500)
    assert s["total_output_tokens"] == sum(q.output_len for q in want)  # ignore_eos: the asked lengths
    assert s["total_input_tokens"] == sum(q.prompt_len for q in want)
    assert s["goodput_req_per_s"] == pytest.approx(s["request_throughput"]) and s["slo_attained"] == 1.0
    assert r["config"]["model"] == ids_server.model and r["config"]["request_rate"] == 40.0
    assert r["label"] == "mixed" and not r["config"]["text_prompts"]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "TTFT" in out and "goodput" in out and "completed 12" in out


def test_text_prompts_all_at_once_and_chat(text_server, tiny_qwen3, tmp_path):
    r = bench(text_server.url, tmp_path / "c.json", "--num-prompts", "5", "--random-input-len", "12",
              "--random-output-len", "4", "--tokenizer", str(tiny_qwen3), "--slo-tpot-ms", "0.0001")
    s = check_report(r, 5)
    assert r["config"]["request_rate"] == "inf" and r["config"]["text_prompts"]
    assert s["total_output_tokens"] == 20 and s["goodput_req_per_s"] == 0 and s["slo_attained"] == 0
    r = bench(text_server.url, tmp_path / "chat.json", "--endpoint", "/v1/chat/completions", "--num-prompts", "3",
              "--random-input-len", "12", "--random-output-len", "4", "--tokenizer", str(tiny_qwen3))
    assert check_report(r, 3)["total_output_tokens"] == 12


def test_send_a_conversation_keeps_the_answer_and_cached_tokens(text_server):
    """A prompt given as chat messages goes as they are; the result carries the streamed text (what a multi-turn
    client appends to the conversation) and usage's cached_tokens (a later turn finds the earlier in cache)."""
    target = Target(text_server.url + CHAT, CHAT, text_server.model, {})
    first_turn = [{"role": "user", "content": "the quick brown fox jumps over the lazy dog " * 3}]

    async def conversation():
        async with aiohttp.ClientSession() as session:
            first = await send(session, target, BenchRequest(first_turn, None, 5), time.perf_counter())
            follow = first_turn + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "why?"}]
            return first, await send(session, target, BenchRequest(follow, None, 5), time.perf_counter())

    first, second = asyncio.run(conversation())
    assert first.ok and second.ok, (first.error, second.error)
    plain = httpx.post(text_server.url + CHAT, timeout=60, json={
        "model": text_server.model, "messages": first_turn, "max_tokens": 5, "temperature": 0, "ignore_eos": True})
    assert first.text == plain.json()["choices"][0]["message"]["content"] and first.output_len == 5
    assert first.cached_tokens is not None and first.cached_tokens < first.prompt_len
    assert second.prompt_len > first.prompt_len and second.cached_tokens >= first.prompt_len - 4, second


def test_sharegpt_file(text_server, tiny_qwen3, tmp_path):
    convs = [{"conversations": [{"from": "human", "value": f"tell me about the number {i} and its friends"},
                                {"from": "gpt", "value": "it is a fine number with many friends " * (i + 1)}]}
             for i in range(6)]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(convs + [{"conversations": [{"from": "human", "value": "alone"}]}]))
    r = bench(text_server.url, tmp_path / "s.json", "--dataset-name", "sharegpt", "--dataset-path", str(path),
              "--num-prompts", "4", "--tokenizer", str(tiny_qwen3), "--request-rate", "50")
    check_report(r, 4)


def tierlm_bench_serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tierlm", "bench", "serve", "--disable-tqdm", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--base-url", "http://127.0.0.1:{port}"], "cannot reach http://127.0.0.1:{port}"),
    (["--base-url", "http://127.0.0.1:{port}", "--model", "m"], "the first request to http://127.0.0.1:{port}"),
])
def test_dead_server_is_one_line(args, message):
    port = str(free_port())  # nothing listens there
    r = tierlm_bench_serve(*[a.replace("{port}", port) for a in args])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message.replace("{port}", port) in lines[0], r.stderr


@pytest.mark.parametrize("args, message", [
    (["--base-url", "localhost:8000"], "--base-url 'localhost:8000': expected an http:// or https:// URL"),
    (["--base-url", "http://127.0.0.1:99999"], "--base-url 'http://127.0.0.1:99999': Port out of range"),
    (["--request-rate", "0"], "--request-rate must be > 0"),
    (["--max-concurrency", "0"], "--max-concurrency must be >= 1"),
    (["--dataset-name", "sharegpt"], "--dataset-name sharegpt needs --dataset-path"),
    (["--endpoint", "/v1/chat/completions"], "--endpoint /v1/chat/completions sends text: give --tokenizer"),
    (["--json", "/nonexistent-dir/r.json"], "--json '/nonexistent-dir/r.json': not a file"),
    (["--random-range-ratio", "1.5"], "--random-range-ratio must be in [0, 1)"),
])
def test_bad_flags_are_one_line(args, message, capsys):
    assert main(["bench", "serve", "--disable-tqdm", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_server_refusal_is_one_line(ids_server, tiny_qwen3, capsys):
    """Text prompts to a server without a tokenizer: the first request's 400 is the error."""
    assert main(["bench", "serve", "--base-url", ids_server.url, "--num-prompts", "2", "--tokenizer",
                 str(tiny_qwen3), "--random-vocab-size", "500", "--disable-tqdm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tierlm bench: error: the first request to ") and len(err.splitlines()) == 1
    assert "HTTP 400" in err and "skip-tokenizer-init" in err
