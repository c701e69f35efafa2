"""`Generation`: the engine requests behind one HTTP request, their merged outputs, and their clean-up.

`start()` submits every sub-request and waits until each has either produced output or been rejected, so a
refusal (queue full, prompt too long) becomes the HTTP status instead of an error inside a 200 stream.
`close()` aborts whatever is unfinished: called from `finally`, it frees the KV of a client that went away.
"""
from __future__ import annotations

import asyncio
import dataclasses
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
    """Runs a group of sub-requests (n choices x prompts) and yields their outputs in arrival order.

    `prompt_only`: the answer carries none of the outputs' tokens (a completion's `max_tokens: 0` with `echo`: each
    sub-request runs one token, which is how its prompt gets scored, and that token is left out)."""

    def __init__(self, client: EngineClient, subs: list[SubRequest], metrics: Optional[ServerMetrics] = None,
                 prompt_only: bool = False):
        self.client = client
        self.prompt_only = prompt_only
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
        """Every output of every sub-request until all are finished. A consumer that fell behind the engine
        (several steps' outputs already queued when it asks) gets each sub-request's queued outputs merged into
        one (`merge_queued`): one event per sub-request instead of one per step, so a saturated frontend spends
        its time per event, not per token, and catches up. Metrics still see every output."""
        while self._buffer or self.unfinished:
            if not self._buffer:
                self._buffer.append(await self.queue.get())
            while not self.queue.empty():
                self._buffer.append(self.queue.get_nowait())
            for item in self._buffer:
                if not isinstance(item, wire.Rejected):
                    self._observe(item)
            items, self._buffer = (self._buffer if len(self._buffer) == 1 else merge_queued(self._buffer)), []
            for item in items:
                if isinstance(item, wire.Rejected):  # the engine died mid-way
                    self.unfinished.discard(item.request_id)
                    sub = self.subs[item.request_id]
                    yield sub, StepOutput(item.request_id, [], "", None, True, "abort", len(sub.token_ids), 0, 0,
                                          item.message)
                    continue
                if item.finished:
                    self.unfinished.discard(item.request_id)
                yield self.subs[item.request_id], _without_tokens(item) if self.prompt_only else item

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


def merge_queued(items: list) -> list:
    """`items` (outputs and refusals in arrival order) with each request's consecutive outputs merged into its
    first: tokens, text and logprobs concatenated, the last one's state (finished, reason, counts). An output
    with an error, or anything after a request's finished output or refusal, is kept apart. Order within a
    request is kept; across requests it does not matter (each streams its own choice)."""
    merged: list = []
    open_at: dict[str, int] = {}  # request id -> index in `merged` of its output still open to merging
    for item in items:
        rid = item.request_id
        at = open_at.pop(rid, None)
        if isinstance(item, wire.Rejected) or item.error:
            merged.append(item)
            continue
        if at is None:
            merged.append(item)
        else:
            first = merged[at]
            lps, plps = first.new_logprobs, first.prompt_logprobs
            if item.new_logprobs:
                lps = (lps or []) + item.new_logprobs
            merged[at] = StepOutput(rid, first.new_token_ids + item.new_token_ids, first.new_text + item.new_text,
                                    lps, item.finished, item.finish_reason, item.num_prompt_tokens,
                                    item.num_cached_tokens, item.num_output_tokens, None, item.stop_reason,
                                    plps if plps is not None else item.prompt_logprobs)
        if not item.finished:
            open_at[rid] = at if at is not None else len(merged) - 1
    return merged


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
        rid: {"text": [], "ids": [], "logprobs": [], "finish_reason": None, "stop_reason": None,
              "prompt_logprobs": None, "prompt": len(s.token_ids), "cached": 0, "output": 0, "error": None}
        for rid, s in gen.subs.items()}
    async for sub, o in gen.outputs():
        r = results[sub.rid]
        r["text"].append(o.new_text)
        r["ids"].extend(o.new_token_ids)
        if o.new_logprobs:
            r["logprobs"].extend(o.new_logprobs)
        if o.prompt_logprobs is not None:
            r["prompt_logprobs"] = o.prompt_logprobs
        if o.finished:
            r.update(finish_reason=o.finish_reason, stop_reason=o.stop_reason, error=o.error,
                     prompt=o.num_prompt_tokens or r["prompt"], cached=o.num_cached_tokens, output=o.num_output_tokens)
    for r in results.values():
        r["text"] = "".join(r["text"])
    return results


def _without_tokens(o: StepOutput) -> StepOutput:
    """`o` as a `max_tokens: 0` answer shows it: no tokens, text or logprobs of the output; ended by its length."""
    ended = o.finish_reason in ("stop", "length")
    return dataclasses.replace(o, new_token_ids=[], new_text="",
                               new_logprobs=[] if o.new_logprobs is not None else None, num_output_tokens=0,
                               finish_reason="length" if ended else o.finish_reason, stop_reason=None)
