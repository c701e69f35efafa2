"""Load and lifecycle on a live server: 200 concurrent streams with exact token counts, 50 clients that go away
mid-stream (KV back at its idle baseline, requests aborted rather than run out), SIGTERM with streams open."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.server.helpers import start_server


@pytest.fixture(scope="module")
def server(tiny_qwen3, tmp_path_factory):
    # --keep-warm-s through the CLI: on a CPU the idle loop asks once, finds nothing to warm and idles as without it
    srv = start_server(tiny_qwen3, tmp_path_factory.mktemp("load"), "--keep-warm-s", "30")
    yield srv
    srv.stop()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _body(server, i: int, max_tokens: int) -> tuple[str, dict]:
    common = {"model": server.model, "max_tokens": max_tokens, "temperature": 0.8, "seed": i, "stream": True,
              "ignore_eos": True, "stream_options": {"include_usage": True}}
    if i % 2:
        return "/v1/chat/completions", {**common, "messages": [{"role": "user", "content": f"Story {i} about a fox"}]}
    return "/v1/completions", {**common, "prompt": f"Story number {i} about the quick brown fox"}


async def _stream(client: httpx.AsyncClient, path: str, body: dict) -> tuple[dict, int]:
    usage, content_chunks = None, 0
    async with client.stream("POST", path, json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for c in chunk["choices"]:
                content_chunks += bool(c.get("text") or (c.get("delta") or {}).get("content"))
    assert usage is not None
    return usage, content_chunks


def test_200_concurrent_streams(server):
    async def main() -> list:
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=300, limits=limits) as client:
            jobs = [_stream(client, *_body(server, i, 1 + i % 8)) for i in range(200)]
            return await asyncio.gather(*jobs)

    results = asyncio.run(main())
    for i, (usage, chunks) in enumerate(results):
        assert usage["completion_tokens"] == 1 + i % 8, (i, usage)
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert chunks <= usage["completion_tokens"]
    stats = server.stats()
    assert stats["num_running"] == 0 and stats["num_waiting"] == 0 and stats["frontend_in_flight"] == 0


def _wait_idle(server, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = server.stats()
        if s["num_running"] == 0 and s["num_waiting"] == 0 and s["frontend_in_flight"] == 0:
            return s
        time.sleep(0.1)
    raise AssertionError(f"server not idle after {timeout}s: {server.stats()}")


def test_disconnects_free_kv(server):
    baseline = _wait_idle(server)
    stream_tokens, blocking_tokens = 64, 480  # nothing can finish before its client hangs up

    async def leave_early(client: httpx.AsyncClient, i: int) -> None:
        path, body = _body(server, i, stream_tokens)
        async with client.stream("POST", path, json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: ") and ('"text":"' in line or '"content":"' in line):
                    break  # got a token: hang up

    async def give_up_waiting(client: httpx.AsyncClient, i: int) -> None:
        _, body = _body(server, i, blocking_tokens)
        with pytest.raises(httpx.ReadTimeout):
            # the client gives up waiting for the answer; connecting may take longer than that on a busy loop
            await client.post("/v1/completions", json={**body, "stream": False, "stream_options": None},
                              timeout=httpx.Timeout(30, read=0.3))

    async def main() -> None:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
            await asyncio.gather(*[leave_early(client, i) for i in range(50)],
                                 *[give_up_waiting(client, 1000 + 2 * i) for i in range(10)])

    asyncio.run(main())
    after = _wait_idle(server)
    assert after["kv_used_tokens"] == baseline["kv_used_tokens"]
    generated = after["generated_tokens_total"] - baseline["generated_tokens_total"]
    assert generated < (50 * stream_tokens + 10 * blocking_tokens) / 2, f"{generated} tokens: requests ran on"
    metrics = httpx.get(server.url + "/metrics").text
    aborted = [line for line in metrics.splitlines() if line.startswith("tierlm_requests_aborted_total")]
    assert aborted and float(aborted[0].split()[-1]) >= 60


def test_sigterm_with_streams_open(server):
    """Last in the module: SIGTERM while streams are open ends every stream and leaves no process behind."""
    engine_pids = [p for p in server.engine_pids if _alive(p)]
    assert engine_pids
    ended = []

    def hold_stream(i: int) -> None:
        path, body = _body(server, i, 480)
        try:
            with httpx.stream("POST", server.url + path, json=body, timeout=60) as r:
                for _ in r.iter_lines():
                    pass
        except httpx.HTTPError:
            pass
        ended.append(i)

    threads = [threading.Thread(target=hold_stream, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while server.stats()["num_running"] < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    assert server.stop(timeout=30) == 0, server.log_text()
    assert time.monotonic() - t0 < 20
    for t in threads:
        t.join(10)
    assert sorted(ended) == [0, 1, 2, 3]
    time.sleep(0.5)
    assert not [p for p in engine_pids if _alive(p)], "engine process left behind"
    assert "SIGTERM" in server.log_text()
