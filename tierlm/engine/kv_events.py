"""`KVEventPublisher`: the engine's KV-cache events on a ZMQ PUB socket, framed and replayable as vLLM does.

The KV controller reports every change of what its radix tree holds to this sink (in the engine thread);
`flush()`, once per engine step, turns what came in since the last flush into one `KVEventBatch`
(`tierlm.engine.kv_event_wire`) with the next sequence number and hands it to a background thread, which
publishes it as three frames — topic, sequence number (8 bytes, big-endian), payload — and keeps the last
`buffer_steps` batches for replay. With a replay endpoint, a ROUTER socket answers a request
[empty frame, start sequence (8 bytes, big-endian)] with one [empty, sequence, payload] message per kept
batch from that sequence on, then [empty, -1 (8 bytes, signed), empty]. See docs/fleet.md.
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
from typing import Any, Optional, Sequence

import zmq

from tierlm.config import EngineConfig
from tierlm.kv_events_settings import KVEventsSettings, parse_kv_events_config
from tierlm.engine import kv_event_wire as wire

log = logging.getLogger(__name__)

END_SEQ = (-1).to_bytes(8, "big", signed=True)
_LINGER_MS = 500  # how long closing waits for the last batches to leave
_ids = itertools.count()


def _attach(sock: zmq.Socket, endpoint: str, always_bind: bool = False) -> None:
    """Bind a wildcard, ipc or inproc address, connect to any other (vLLM's rule: the stable side binds)."""
    bind = always_bind or "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))
    try:
        sock.bind(endpoint) if bind else sock.connect(endpoint)
    except zmq.ZMQError as e:
        raise ValueError(f"--kv-events-config: cannot {'bind' if bind else 'connect'} {endpoint}: {e}") from None


class KVEventPublisher:
    """A `tierlm.kvcache.events.KVEventSink` that publishes one event batch per `flush()`.

    Not thread-safe: the engine thread calls the sink methods and `flush`; the sockets that face the
    network belong to the publisher thread. The queue between them holds at most `max_queue_size` batches
    (a full queue blocks the engine rather than lose a batch: a consumer must see every sequence number).
    """

    def __init__(self, settings: KVEventsSettings, block_size: int) -> None:
        self.settings, self.block_size = settings, block_size
        self._pending: list[list[Any]] = []
        self._next_seq = 0
        self._closed = False
        self._ctx = zmq.Context()
        socks: list[zmq.Socket] = []
        try:
            self._pub = self._ctx.socket(zmq.PUB)
            socks.append(self._pub)
            self._pub.setsockopt(zmq.SNDHWM, settings.hwm)
            self._pub.setsockopt(zmq.LINGER, _LINGER_MS)
            _attach(self._pub, settings.endpoint)
            self._replay: Optional[zmq.Socket] = None
            if settings.replay_endpoint is not None:
                self._replay = self._ctx.socket(zmq.ROUTER)
                socks.append(self._replay)
                self._replay.setsockopt(zmq.LINGER, 0)
                _attach(self._replay, settings.replay_endpoint, always_bind=True)
            inbox = f"inproc://kv-events-{next(_ids)}"
            self._inbox_out = self._ctx.socket(zmq.PAIR)  # engine thread side
            self._inbox_in = self._ctx.socket(zmq.PAIR)  # publisher thread side
            socks += [self._inbox_out, self._inbox_in]
            for s, hwm in ((self._inbox_out, zmq.SNDHWM), (self._inbox_in, zmq.RCVHWM)):
                s.setsockopt(hwm, max(1, settings.max_queue_size // 2))
            self._inbox_out.bind(inbox)
            self._inbox_in.connect(inbox)
        except Exception:
            for s in socks:
                s.close(linger=0)
            self._ctx.term()
            raise
        self._buffer: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=settings.buffer_steps)
        self._thread = threading.Thread(target=self._run, name="kv-events", daemon=True)
        self._thread.start()

    # ---- the sink (engine thread) ------------------------------------------------------------------------
    def stored(self, medium: str, page_keys: Sequence[str], parent_key: Optional[str],
               token_ids: Sequence[int]) -> None:
        self._pending.append(wire.block_stored(page_keys, parent_key, token_ids, self.block_size, medium))

    def removed(self, medium: str, page_keys: Sequence[str]) -> None:
        self._pending.append(wire.block_removed(page_keys, medium))

    def cleared(self) -> None:
        self._pending.append(wire.all_blocks_cleared())

    @property
    def last_seq(self) -> int:
        """Sequence number of the last batch handed to the publisher thread (-1 before the first)."""
        return self._next_seq - 1

    def flush(self) -> Optional[int]:
        """Publish the events reported since the last flush as one batch; returns its sequence number
        (None when there was nothing to publish)."""
        if not self._pending or self._closed:
            return None
        events, self._pending = self._pending, []
        seq = self._next_seq
        self._next_seq += 1
        self._inbox_out.send_multipart([seq.to_bytes(8, "big"), wire.encode_batch(events)])
        return seq

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is pending, stop the thread and release the sockets (idempotent)."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._inbox_out.send(b"")  # the stop mark, behind every batch
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("KV event publisher did not stop within %.1f s", timeout)
            self._ctx.destroy(linger=0)
            return
        self._inbox_out.close(linger=0)
        self._ctx.term()

    # ---- the publisher thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._inbox_in, zmq.POLLIN)
        if self._replay is not None:
            poller.register(self._replay, zmq.POLLIN)
        topic = self.settings.topic.encode()
        try:
            while True:
                ready = dict(poller.poll())
                # drain the inbox first, so a replay sees every batch flushed before it was asked
                while self._inbox_in in ready:
                    frames = self._inbox_in.recv_multipart()
                    if frames == [b""]:
                        return
                    seq_bytes, payload = frames
                    self._pub.send_multipart([topic, seq_bytes, payload])  # PUB drops at its HWM, never blocks
                    self._buffer.append((int.from_bytes(seq_bytes, "big"), payload))
                    if not self._inbox_in.poll(0):
                        break
                if self._replay is not None and self._replay in ready:
                    self._serve_replay()
        except Exception:  # noqa: BLE001  (the engine goes on without events; say so once)
            log.exception("KV event publisher stopped")
        finally:
            for s in (self._pub, self._replay, self._inbox_in):
                if s is not None:
                    s.close()

    def _serve_replay(self) -> None:
        frames = self._replay.recv_multipart()
        if len(frames) != 3 or len(frames[2]) != 8:
            log.warning("ignoring a malformed KV event replay request (%d frames)", len(frames))
            return
        client, _, start = frames
        first = int.from_bytes(start, "big")
        for seq, payload in self._buffer:
            if seq >= first:
                self._replay.send_multipart([client, b"", seq.to_bytes(8, "big"), payload])
        self._replay.send_multipart([client, b"", END_SEQ, b""])


def open_publisher(config: EngineConfig) -> Optional[KVEventPublisher]:
    """The publisher `--kv-events-config` asks for, or None (raises ValueError naming the flag)."""
    settings = parse_kv_events_config(config.kv_events_config)
    if settings is None:
        if config.kv_events_config is not None:
            log.warning("--kv-events-config names no publisher (publisher 'null', or neither 'publisher' nor "
                        "'enable_kv_cache_events'): no KV events are published")
        return None
    pub = KVEventPublisher(settings, config.page_size)
    log.info("KV events: publishing on %s%s", settings.endpoint,
             f", replay on {settings.replay_endpoint}" if settings.replay_endpoint else "")
    return pub
