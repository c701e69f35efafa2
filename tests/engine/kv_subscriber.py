"""A KV-event consumer as vLLM's own subscribers are written: the message classes re-declared from vLLM's
published format (`vllm/distributed/kv_events.py`, msgspec structs, array-encoded and tagged), a SUB socket
for the live stream and a DEALER socket for the replay protocol, and a per-medium view of the blocks."""
from __future__ import annotations

import time
from typing import Any, Optional, Union

import msgspec
import zmq

END_SEQ = -1


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: Optional[int] = None


class KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    """Base class of the events (the class name is the tag, the first item of each array)."""


class BlockStored(KVCacheEvent):
    block_hashes: list[Union[bytes, int]]
    parent_block_hash: Optional[Union[bytes, int]]
    token_ids: list[int]
    block_size: int
    lora_id: Optional[int]
    medium: Optional[str]
    lora_name: Optional[str]
    extra_keys: Optional[list[Optional[tuple[Any, ...]]]] = None
    group_idx: Optional[int] = None
    kv_cache_spec_kind: Optional[str] = None
    kv_cache_spec_sliding_window: Optional[int] = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[Union[bytes, int]]
    medium: Optional[str]
    group_idx: Optional[int] = None


class AllBlocksCleared(KVCacheEvent):
    pass


class KVEventBatch(EventBatch):
    events: list[Union[BlockStored, BlockRemoved, AllBlocksCleared]]


# The first release's declarations (no medium, no lora_name, no data-parallel rank): a consumer written then
# still decodes the stream, ignoring the trailing items it does not know.
class FirstBlockStored(KVCacheEvent, tag="BlockStored"):
    block_hashes: list[int]
    parent_block_hash: Optional[int]
    token_ids: list[int]
    block_size: int
    lora_id: Optional[int]


class FirstBlockRemoved(KVCacheEvent, tag="BlockRemoved"):
    block_hashes: list[int]


class FirstKVEventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Union[FirstBlockStored, FirstBlockRemoved, AllBlocksCleared]]


class Subscriber:
    """Follows one publisher: every batch applied exactly once and in order (gaps are filled by replay)."""

    def __init__(self, endpoint: str, replay_endpoint: str, topic: str) -> None:
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.connect(endpoint)
        self.sub.setsockopt_string(zmq.SUBSCRIBE, topic)
        self.replay = self.ctx.socket(zmq.DEALER)
        self.replay.connect(replay_endpoint)
        self.topic = topic.encode()
        self.decoder = msgspec.msgpack.Decoder(KVEventBatch)
        self.next_seq = 0
        self.batches: list[KVEventBatch] = []
        self.held: dict[str, set] = {"GPU": set(), "CPU": set(), "DISK": set()}
        self.replayed = 0

    def _apply(self, seq: int, payload: bytes) -> None:
        assert seq == self.next_seq, f"batch {seq} applied out of order (expected {self.next_seq})"
        batch = self.decoder.decode(payload)
        self.batches.append(batch)
        for ev in batch.events:
            if isinstance(ev, BlockStored):
                assert len(ev.token_ids) == len(ev.block_hashes) * ev.block_size
                self.held[ev.medium] |= set(ev.block_hashes)
            elif isinstance(ev, BlockRemoved):
                assert set(ev.block_hashes) <= self.held[ev.medium], "removed a block never stored"
                self.held[ev.medium] -= set(ev.block_hashes)
            else:
                for blocks in self.held.values():
                    blocks.clear()
        self.next_seq = seq + 1

    def _catch_up(self) -> None:
        """Ask the replay socket for everything from `next_seq` on."""
        self.replay.send_multipart([b"", self.next_seq.to_bytes(8, "big")])
        while True:
            assert self.replay.poll(5000), "no answer from the replay socket"
            empty, seq_bytes, payload = self.replay.recv_multipart()
            seq = int.from_bytes(seq_bytes, "big", signed=True)
            if seq == END_SEQ:
                assert empty == b"" and payload == b""
                return
            if seq >= self.next_seq:
                self.replayed += 1
                self._apply(seq, payload)

    def follow(self, last_seq: int, timeout: float = 20.0) -> None:
        """Receive until batch `last_seq` is applied."""
        deadline = time.monotonic() + timeout
        while self.next_seq <= last_seq:
            assert time.monotonic() < deadline, f"stuck at batch {self.next_seq}, waiting for {last_seq}"
            if not self.sub.poll(100):
                self._catch_up()  # e.g. the batches published before this socket had joined
                continue
            topic, seq_bytes, payload = self.sub.recv_multipart()
            assert topic == self.topic and len(seq_bytes) == 8
            seq = int.from_bytes(seq_bytes, "big")
            if seq > self.next_seq:
                self._catch_up()
            if seq == self.next_seq:
                self._apply(seq, payload)

    def count(self, kind: type, medium: Optional[str] = None) -> int:
        return sum(1 for b in self.batches for e in b.events
                   if isinstance(e, kind) and (medium is None or getattr(e, "medium", None) == medium))

    def close(self) -> None:
        self.ctx.destroy(linger=0)
