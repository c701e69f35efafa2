"""The frontend's side of the engine link: submit/abort over a ZMQ PUSH socket, outputs routed to per-request
asyncio queues by one receiver task reading the PULL socket.

Sends are synchronous and non-blocking (unbounded high-water mark), so `abort` can be called from a
`finally` block of a cancelled stream. A watchdog notices the engine process gone, tells `on_dead` (the server
shuts itself down, so a supervisor restarts it; False back: an exit the server waited for, during its own
shutdown) and fails every pending request.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, Callable, Optional, Union

import zmq
import zmq.asyncio

from tierlm.engine.outputs import StepOutput
from tierlm.sampling_params import SamplingParams
from tierlm.server import wire

log = logging.getLogger(__name__)

Item = Union[StepOutput, wire.Rejected]


class EngineDeadError(RuntimeError):
    """The engine process is not running; no request can be served."""


class EngineClient:
    """Connects to an engine process's sockets and multiplexes many requests over them."""

    def __init__(self, req_addr: str, out_addr: str, is_alive: Callable[[], bool] = lambda: True,
                 watchdog_s: float = 1.0, on_dead: Callable[[], Optional[bool]] = lambda: None):
        self.req_addr = req_addr
        self.out_addr = out_addr
        self.is_alive = is_alive
        self.on_dead = on_dead
        self.watchdog_s = watchdog_s
        self.dead = False
        self._queues: dict[str, asyncio.Queue] = {}
        self._stats: dict[int, asyncio.Future] = {}
        self._qids = itertools.count()
        self._tasks: list[asyncio.Task] = []
        self._sync_ctx: Optional[zmq.Context] = None
        self._async_ctx: Optional[zmq.asyncio.Context] = None
        self._push: Optional[zmq.Socket] = None
        self._pull: Optional[zmq.asyncio.Socket] = None

    async def start(self) -> None:
        """Connect the sockets and start the receiver and watchdog tasks (call inside the event loop)."""
        self._sync_ctx = zmq.Context()
        self._push = self._sync_ctx.socket(zmq.PUSH)
        self._push.setsockopt(zmq.SNDHWM, 0)
        self._push.connect(self.req_addr)
        self._async_ctx = zmq.asyncio.Context()
        self._pull = self._async_ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.RCVHWM, 0)
        self._pull.connect(self.out_addr)
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._watch())]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._fail_all("server is shutting down")
        if self._push is not None:
            self._push.close(linger=200)
        if self._pull is not None:
            self._pull.close(linger=0)
        for ctx in (self._sync_ctx, self._async_ctx):
            if ctx is not None:
                ctx.term()

    @property
    def num_in_flight(self) -> int:
        return len(self._queues)

    def submit(self, rid: str, token_ids: list[int], params: SamplingParams,
               queue: Optional[asyncio.Queue] = None) -> asyncio.Queue:
        """Send one request; its outputs (and a possible `Rejected`) arrive on `queue` (shared by a group
        of requests, or a new one), which is returned."""
        if self.dead:
            raise EngineDeadError("the engine process is not running")
        data = wire.pack(wire.add_msg(rid, token_ids, params))  # fails before anything is registered
        q: asyncio.Queue = queue if queue is not None else asyncio.Queue()
        self._queues[rid] = q
        self._push_bytes(data)
        return q

    def abort(self, rid: str) -> None:
        """Stop a request and free its KV; its queue is dropped at once. Safe to call from `finally`."""
        if self._queues.pop(rid, None) is not None and not self.dead:
            self._send({"t": wire.ABORT, "rid": rid})

    def release(self, rid: str) -> None:
        """Forget a finished request's queue."""
        self._queues.pop(rid, None)

    async def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        """The engine's `stats()` dict, fetched over the link."""
        if self.dead:
            raise EngineDeadError("the engine process is not running")
        qid = next(self._qids)
        fut = asyncio.get_running_loop().create_future()
        self._stats[qid] = fut
        self._send({"t": wire.STATS, "qid": qid})
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._stats.pop(qid, None)

    def end_all(self, why: str) -> None:
        """End every open request now with `why` (a 503 refusal: a stream's error event, then its end) and abort
        it in the engine: the server is about to close its connections and would otherwise cut them."""
        if not self.dead:
            for rid in self._queues:
                self._send({"t": wire.ABORT, "rid": rid})
        self._fail_all(why)

    def shutdown_engine(self) -> None:
        if not self.dead:
            self._send({"t": wire.SHUTDOWN})

    def _send(self, msg: dict) -> None:
        self._push_bytes(wire.pack(msg))

    def _push_bytes(self, data: bytes) -> None:
        assert self._push is not None, "EngineClient.start() was not called"
        self._push.send(data, zmq.NOBLOCK)

    async def _receive(self) -> None:
        assert self._pull is not None
        while True:
            data = await self._pull.recv()
            try:
                self._dispatch(wire.unpack(data))
            except Exception:  # noqa: BLE001  (one bad message must not stop the receiver)
                log.exception("bad message from the engine")

    def _dispatch(self, msg: dict) -> None:
        kind = msg["t"]
        if kind == wire.OUTPUTS:
            for row in msg["outs"]:
                out = wire.row_to_output(row)
                q = self._queues.get(out.request_id)
                if q is not None:
                    q.put_nowait(out)
                    if out.finished:
                        self._queues.pop(out.request_id, None)
        elif kind == wire.REJECT:
            q = self._queues.pop(msg["rid"], None)
            if q is not None:
                q.put_nowait(wire.Rejected(msg["rid"], int(msg["status"]), str(msg["msg"]), msg.get("param"),
                                           msg.get("code")))
        elif kind == wire.STATS:
            fut = self._stats.get(msg["qid"])
            if fut is not None and not fut.done():
                fut.set_result(msg["stats"])

    async def _watch(self) -> None:
        while not self.dead:
            await asyncio.sleep(self.watchdog_s)
            if not self.is_alive():
                self.dead = True
                if self.on_dead() is False:  # an exit the server waited for (its shutdown is under way)
                    self._fail_all("server is shutting down")
                else:
                    log.error("the engine process died; failing %d requests", len(self._queues))
                    self._fail_all("the engine process died")

    def _fail_all(self, why: str) -> None:
        for rid, q in list(self._queues.items()):
            q.put_nowait(wire.Rejected(rid, 503, why))
        self._queues.clear()
        for fut in self._stats.values():
            if not fut.done():
                fut.set_exception(EngineDeadError(why))
