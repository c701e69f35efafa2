"""`Generation`: the engine requests behind one HTTP request, their merged outputs, and their clean-up.

`start()` submits every sub-request and waits until each has either produced output or been rejected, so a
refusal (queue full, prompt too long) becomes the HTTP status instead of an error inside a 200 stream.
`close()` aborts whatever is unfinished: called from `finally`, it frees the KV of a client that went away.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Awaitable, Optional, TypeVar

from starlette.requests import Request

from tierlm.engine.outputs import StepOutput
from tierlm.server import wire
from tierlm.server.engine_client import EngineClient, EngineDeadError
from tierlm.server.errors import APIError
from tierlm.server.metrics import ServerMetrics
from tierlm.server.requests import SubRequest

T = TypeVar("T")


class ClientGone(Exception):
    """The HTTP client disconnected before the answer was complete."""


class Generation:
    """Runs a group of sub-requests (n choices x prompts) and yields their outputs in arrival order."""

    def __init__(self, client: EngineClient, subs: list[SubRequest], metrics: Optional[ServerMetrics] = None):
        self.client = client
        self.subs = {s.rid: s for s in subs}
        self.metrics = metrics
        self.queue: asyncio.Queue = asyncio.Queue()
        self.unfinished = set(self.subs)
        self.started_at = time.monotonic()
        self.first_token_at: dict[str, float] = {}
        self.last_token_at: dict[str, float] = {}  # the latest output with tokens, per sub-request (for ITL)
        self._buffer: list[StepOutput] = []

    async def start(self) -> None:
        """Submit all sub-requests; raise APIError if the engine refuses any of them. On any failure (or
        cancellation) every sub-request already submitted is aborted, so nothing is left in flight."""
        try:
            await self._start()
        except BaseException:
            self.close()
            raise

    async def _start(self) -> None:
        try:
            for s in self.subs.values():
                self.client.submit(s.rid, s.token_ids, s.params, self.queue)
        except EngineDeadError as e:
            raise APIError(503, f"Service unavailable: {e}", None, "engine_unavailable") from None
        pending = set(self.subs)
        while pending:
            item = await self.queue.get()
            if isinstance(item, wire.Rejected):
                self.unfinished.discard(item.request_id)
                raise APIError(item.status, item.message, item.param, item.code)
            if item.finished and item.error and not item.new_token_ids:
                self.unfinished.discard(item.request_id)
                if item.finish_reason == "error":  # the scheduler refused it (needs more KV than the pool has)
                    raise APIError(400, item.error, None, "request_refused")
                raise APIError(500, f"generation failed: {item.error}", None, "engine_error")
            pending.discard(item.request_id)
            self._buffer.append(item)

    async def outputs(self) -> AsyncIterator[tuple[SubRequest, StepOutput]]:
        """Every output of every sub-request until all are finished."""
        while self._buffer or self.unfinished:
            item = self._buffer.pop(0) if self._buffer else await self.queue.get()
            if isinstance(item, wire.Rejected):  # the engine died mid-way
                self.unfinished.discard(item.request_id)
                sub = self.subs[item.request_id]
                yield sub, StepOutput(item.request_id, [], "", None, True, "abort", len(sub.token_ids), 0, 0,
                                      item.message)
                continue
            self._observe(item)
            if item.finished:
                self.unfinished.discard(item.request_id)
            yield self.subs[item.request_id], item

    def _observe(self, o: StepOutput) -> None:
        now = time.monotonic()
        if o.new_token_ids:
            last = self.last_token_at.get(o.request_id)
            self.last_token_at[o.request_id] = now
            if last is None:
                self.first_token_at[o.request_id] = now
                if self.metrics is not None:
                    self.metrics.ttft.observe(now - self.started_at)
            elif self.metrics is not None:
                self.metrics.itl.observe(now - last)
        if o.finished and self.metrics is not None:
            first = self.first_token_at.get(o.request_id)
            if first is not None and o.num_output_tokens > 1:
                self.metrics.tpot.observe((now - first) / (o.num_output_tokens - 1))
            self.metrics.e2e.observe(now - self.started_at)
            self.metrics.generation_tokens.inc(o.num_output_tokens)
            self.metrics.prompt_tokens.inc(o.num_prompt_tokens)

    def close(self) -> None:
        """Abort every unfinished sub-request (frees their KV now). Idempotent; safe in `finally`."""
        if self.unfinished and self.metrics is not None:
            self.metrics.aborted.inc(len(self.unfinished))
        for rid in self.subs:
            if rid in self.unfinished:
                self.client.abort(rid)
            else:
                self.client.release(rid)
        self.unfinished.clear()


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, but raise ClientGone (cancelling it) as soon as the client disconnects."""

    async def wait_disconnect() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_disconnect())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # noqa: BLE001
        pass
    raise ClientGone()


async def collect(gen: Generation) -> dict[str, Any]:
    """Run a generation to the end: per sub-request text, token ids, logprobs and final counts."""
    results: dict[str, dict[str, Any]] = {
        rid: {"text": [], "ids": [], "logprobs": [], "finish_reason": None, "prompt": len(s.token_ids),
              "cached": 0, "output": 0, "error": None} for rid, s in gen.subs.items()}
    async for sub, o in gen.outputs():
        r = results[sub.rid]
        r["text"].append(o.new_text)
        r["ids"].extend(o.new_token_ids)
        if o.new_logprobs:
            r["logprobs"].extend(o.new_logprobs)
        if o.finished:
            r.update(finish_reason=o.finish_reason, prompt=o.num_prompt_tokens or r["prompt"],
                     cached=o.num_cached_tokens, output=o.num_output_tokens, error=o.error)
    for r in results.values():
        r["text"] = "".join(r["text"])
    return results
