"""`RankLink`: the control channel between the controller (rank 0) and one worker rank.

Messages are msgpack lists over an authenticated `multiprocessing.connection` socket (TCP, so ranks may sit
on other nodes). The controller posts step plans and tier operations in order; a worker answers each
request id once (`reply`). Nothing here is a collective: a rank that dies or stalls fails or delays only the
futures waiting on it, and the controller decides what that means (a failed fetch is recomputed on every
rank).
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
import threading
from multiprocessing.connection import Connection
from typing import Any, Optional

import msgpack

logger = logging.getLogger(__name__)


class RankLost(RuntimeError):
    """The connection to a worker rank broke (the process died or the network failed)."""


def pack(*msg: Any) -> bytes:
    return msgpack.packb(list(msg), use_bin_type=True)


def unpack(data: bytes) -> list:
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


class RankLink:
    """Controller side of one worker's channel: `post` sends, `expect` allocates a request id whose future
    the worker's reply completes; a reader thread delivers replies."""

    def __init__(self, rank: int, conn: Connection) -> None:
        self.rank, self.conn = rank, conn
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, cf.Future] = {}
        self._lock = threading.Lock()
        self.lost: Optional[str] = None
        self._reader = threading.Thread(target=self._read, name=f"tierlm-rank{rank}-link", daemon=True)
        self._reader.start()

    def expect(self) -> tuple[int, cf.Future]:
        """A fresh request id and the future its reply will complete."""
        fut: cf.Future = cf.Future()
        rid = next(self._ids)
        with self._lock:
            if self.lost is not None:
                fut.set_exception(RankLost(self.lost))
                return rid, fut
            self._waiting[rid] = fut
        return rid, fut

    def post(self, *msg: Any) -> None:
        """Send a message (raises RankLost when the rank is gone)."""
        if self.lost is not None:
            raise RankLost(self.lost)
        try:
            with self._send_lock:
                self.conn.send_bytes(pack(*msg))
        except (OSError, EOFError, ValueError) as e:
            self._fail(f"rank {self.rank}: the control channel broke ({type(e).__name__}: {e})")
            raise RankLost(self.lost) from None

    def call(self, op: str, *args: Any) -> cf.Future:
        """Post request `op` and return the future of its reply."""
        rid, fut = self.expect()
        if not fut.done():
            try:
                self.post(op, rid, *args)
            except RankLost:
                pass  # the future already carries the failure
        return fut

    def _read(self) -> None:
        while True:
            try:
                msg = unpack(self.conn.recv_bytes())
            except (OSError, EOFError, ValueError) as e:
                self._fail(f"rank {self.rank}: the control channel closed ({type(e).__name__})")
                return
            kind, rid, ok, value = msg
            if kind != "reply":
                logger.warning("rank %d sent an unknown message %r", self.rank, kind)
                continue
            with self._lock:
                fut = self._waiting.pop(rid, None)
            if fut is None:
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(RuntimeError(f"rank {self.rank}: {value}"))

    def _fail(self, why: str) -> None:
        with self._lock:
            if self.lost is None:
                self.lost = why
            waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(RankLost(why))

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass
        self._reader.join(timeout=5)


class ReplySender:
    """Worker side: sends replies from any thread (the main loop and the copy/store threads)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def reply(self, rid: int, ok: bool, value: Any = None) -> None:
        try:
            with self._lock:
                self.conn.send_bytes(pack("reply", rid, ok, value))
        except (OSError, EOFError, ValueError):
            pass  # the controller is gone; the main loop notices on its next receive

    def reply_future(self, rid: int, fut: cf.Future, convert: Any = None) -> None:
        """Reply when `fut` completes: its (converted) result, or the error as text."""
        def done(f: cf.Future) -> None:
            if f.exception() is not None:
                self.reply(rid, False, f"{type(f.exception()).__name__}: {f.exception()}")
            else:
                self.reply(rid, True, convert(f.result()) if convert else f.result())
        fut.add_done_callback(done)
