"""The HTTP side of `tierlm bench serve`: streaming requests to an OpenAI-compatible server, and their
arrival process (Poisson at a given rate, or all at once, under an optional concurrency cap).

Each request streams (`stream_options.include_usage`); a chunk that carries output is one token arrival:
its time after the send is the TTFT for the first, the gaps between arrivals are the inter-token latencies.
The output length is the server's `usage.completion_tokens` (else the number of token chunks).
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import aiohttp

from tierlm.cli.bench.serve_data import BenchRequest
from tierlm.cli.errors import CLIError

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"


@dataclass
class RequestResult:
    """What one request measured; times in seconds, `sent` relative to the start of the run."""

    ok: bool = False
    error: str = ""
    sent: float = 0.0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    prompt_len: Optional[int] = None
    output_len: int = 0
    cached_tokens: Optional[int] = None  # usage.prompt_tokens_details.cached_tokens, when the server reports it
    text: str = ""  # the streamed output (a multi-turn client appends it to the conversation)

    @property
    def tpot(self) -> float:
        """Time per output token after the first (0 for a one-token answer)."""
        return (self.latency - self.ttft) / (self.output_len - 1) if self.output_len > 1 else 0.0


@dataclass
class Target:
    """Where and how requests go: full URL, API flavour, model name, headers and sampling fields."""

    url: str
    endpoint: str
    model: str
    headers: dict[str, str]
    temperature: float = 0.0
    ignore_eos: bool = True

    def payload(self, req: BenchRequest, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": self.temperature,
                                "stream": True, "stream_options": {"include_usage": True}}
        if self.ignore_eos:
            body["ignore_eos"] = True  # a vLLM/SGLang/TierLM extension: answers of the asked length
        if self.endpoint == CHAT:  # a prompt that is a list of messages is a whole conversation
            conversation = isinstance(req.prompt, list) and req.prompt and isinstance(req.prompt[0], dict)
            body["messages"] = req.prompt if conversation else [{"role": "user", "content": req.prompt}]
        else:
            body["prompt"] = req.prompt
        return body


def _error_message(status: int, text: str) -> str:
    try:
        msg = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        msg = " ".join(text.split())[:300]
    return f"HTTP {status}: {msg}"


def _output_text(chunk: dict[str, Any], endpoint: str) -> str:
    choice = chunk["choices"][0]
    return ((choice.get("delta") or {}).get("content") if endpoint == CHAT else choice.get("text")) or ""


def _has_output(chunk: dict[str, Any], endpoint: str) -> bool:
    """Whether a streamed chunk carries output (a role-only or finish-only chat chunk does not; a
    completions chunk does even with empty text: servers without a tokenizer send token ids only)."""
    choices = chunk.get("choices")
    if not choices:
        return False
    if endpoint == CHAT:
        return bool((choices[0].get("delta") or {}).get("content"))
    return True


async def send(session: aiohttp.ClientSession, target: Target, req: BenchRequest, t0: float,
               max_tokens: Optional[int] = None) -> RequestResult:
    """Stream one request; never raises for what the server or the network does (see `ok`/`error`)."""
    res = RequestResult(prompt_len=req.prompt_len)
    start = time.perf_counter()
    res.sent = start - t0
    last, chunks, texts = start, 0, []
    try:
        async with session.post(target.url, json=target.payload(req, max_tokens or req.output_len),
                                headers=target.headers) as resp:
            if resp.status != 200:
                res.error = _error_message(resp.status, await resp.text())
                return res
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    res.error = f"stream error: {chunk['error'].get('message', chunk['error'])}"
                    return res
                now = time.perf_counter()
                if _has_output(chunk, target.endpoint):
                    if chunks == 0:
                        res.ttft = now - start
                    else:
                        res.itl.append(now - last)
                    chunks += 1
                    last = now
                    texts.append(_output_text(chunk, target.endpoint))
                usage = chunk.get("usage")
                if usage:
                    res.output_len = int(usage.get("completion_tokens") or 0)
                    res.prompt_len = int(usage.get("prompt_tokens") or 0) or res.prompt_len
                    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
                    res.cached_tokens = None if cached is None else int(cached)
        res.latency = time.perf_counter() - start
        res.text = "".join(texts)
        res.output_len = res.output_len or chunks
        res.ok = chunks > 0
        if not res.ok:
            res.error = "the stream ended without output"
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, OSError) as e:
        res.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return res


def arrival_offsets(n: int, rate: float, seed: int) -> list[float]:
    """Send times (s from the start) of `n` requests: a Poisson process of `rate` per second, or all at 0."""
    if math.isinf(rate):
        return [0.0] * n
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


async def run_load(session: aiohttp.ClientSession, target: Target, reqs: list[BenchRequest], rate: float,
                   max_concurrency: Optional[int], seed: int, on_done: Callable[[], None]
                   ) -> tuple[list[RequestResult], float]:
    """Send every request at its arrival time (waiting for a free slot under `max_concurrency`); return
    the results in request order and the wall time of the whole run."""
    sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    t0 = time.perf_counter()

    async def one(req: BenchRequest, at: float) -> RequestResult:
        delay = t0 + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if sem is None:
            res = await send(session, target, req, t0)
        else:
            async with sem:
                res = await send(session, target, req, t0)
        on_done()
        return res

    tasks = [asyncio.create_task(one(r, at)) for r, at in zip(reqs, arrival_offsets(len(reqs), rate, seed))]
    results = await asyncio.gather(*tasks)
    return list(results), time.perf_counter() - t0


async def served_model(session: aiohttp.ClientSession, base_url: str, headers: dict[str, str]) -> str:
    """The first model of GET /v1/models (what `--model` defaults to)."""
    url = base_url + "/v1/models"
    try:
        async with session.get(url, headers=headers) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise CLIError(f"{url} answered {_error_message(resp.status, text)}; give --model")
            return json.loads(text)["data"][0]["id"]
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        raise CLIError(f"cannot reach {base_url}: {e or type(e).__name__}") from None
    except (ValueError, KeyError, IndexError, TypeError):
        raise CLIError(f"{url} did not list a model; give --model") from None
