"""KV events of a running engine, decoded as vLLM's consumers decode them: a subscriber that follows the stream
(with replay for what it missed) ends with exactly the blocks the engine's radix tree holds per tier, after a
random workload with evictions, L2 backups, host evictions and L3 prefetches. Also the publisher's framing,
bounded replay buffer and start-up errors."""
from __future__ import annotations

import json
import random

import msgspec
import pytest
import zmq

from tests.conftest import CPU_OPTS
from tests.engine.kv_subscriber import (AllBlocksCleared, BlockRemoved, BlockStored, FirstKVEventBatch,
                                        KVEventBatch, Subscriber)
from tierlm import LLM, SamplingParams
from tierlm.kv_events_settings import KVEventsSettings
from tierlm.engine.kv_events import KVEventPublisher


def block_hash(page_key: str) -> int:
    return int(page_key[:16], 16)  # docs/fleet.md: the first 8 bytes of the page key, big-endian


def tree_blocks(kv) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {"GPU": set(), "CPU": set(), "DISK": set()}
    for node in kv.radix.nodes():
        keys = {block_hash(k) for k in node.page_hashes}
        if node.pages is not None:
            out["GPU"] |= keys
        if node.host_pages is not None:
            out["CPU"] |= keys
        if node.in_store:
            out["DISK"] |= keys
    return out


def endpoints(tmp_path) -> dict:
    return {"publisher": "zmq", "endpoint": f"ipc://{tmp_path}/kv-pub",
            "replay_endpoint": f"ipc://{tmp_path}/kv-replay", "topic": "kv"}


def test_subscriber_arrives_at_the_tree_per_tier(tiny_qwen3, tmp_path):
    cfg = endpoints(tmp_path)
    llm = LLM(str(tiny_qwen3), **{**CPU_OPTS, "kv_cache_gb": 0.0002, "enable_hicache": True, "hicache_ratio": 1.0,
                                  "kv_store": f"file://{tmp_path}/l3", "hicache_prefetch_threshold": 4,
                                  "kv_events_config": json.dumps(cfg)})
    engine = llm.engine
    sub = None
    rng = random.Random(7)
    stems = [[rng.randrange(1, 500) for _ in range(rng.randrange(8, 24))] for _ in range(6)]
    try:
        for rnd in range(4):
            for i in range(10):
                prompt = rng.choice(stems) + [rng.randrange(1, 500) for _ in range(rng.randrange(0, 12))]
                engine.add_request(f"{rnd}-{i}", prompt, SamplingParams(temperature=0, max_tokens=rng.randrange(1, 8),
                                                                        ignore_eos=True, detokenize=False))
            steps = 0
            while engine.has_unfinished():
                engine.step()
                steps += 1
                if steps == 3 and rnd % 2:
                    engine.abort_request(f"{rnd}-{rng.randrange(10)}")
            if rnd == 2:
                engine.kv.drop_device_cache()
                engine.kv.drop_host_cache()  # what is left lives in L3 only; the next round fetches it back
                engine.step()  # flushes the batch of the drops
            if sub is None:  # joins after a round was published: it must replay what it missed
                sub = Subscriber(cfg["endpoint"], cfg["replay_endpoint"], "kv")
            sub.follow(engine.kv_events.last_seq)
            assert sub.held == tree_blocks(engine.kv), f"round {rnd}: the replayed view differs from the tree"
        assert sub.count(BlockStored, "GPU") and sub.count(BlockRemoved, "GPU"), "no device eviction happened"
        assert sub.count(BlockStored, "CPU") and sub.count(BlockRemoved, "CPU"), "no backup or host eviction"
        assert sub.count(BlockStored, "DISK") and sub.count(BlockRemoved, "DISK"), "no L3 write or forgetting"
        assert engine.stats()["tier_hits"]["L3"]["tokens"] > 0, "no L3 prefetch happened"
        assert sub.replayed > 0, "the replay path was not exercised"
        assert isinstance(sub.batches[0].events[0], AllBlocksCleared), "the stream starts from an empty cache"
        assert {b.data_parallel_rank for b in sub.batches} == {0}
        assert all(e.block_size == 4 and e.lora_id is None for b in sub.batches for e in b.events
                   if isinstance(e, BlockStored))
        llm.close()
        sub.follow(engine.kv_events.last_seq)
        assert isinstance(sub.batches[-1].events[-1], AllBlocksCleared) and not any(sub.held.values())
    finally:
        if sub is not None:
            sub.close()


def test_publisher_frames_replay_buffer_and_older_decoders(tmp_path):
    cfg = endpoints(tmp_path)
    pub = KVEventPublisher(KVEventsSettings(endpoint=cfg["endpoint"], replay_endpoint=cfg["replay_endpoint"],
                                            buffer_steps=3, topic="kv"), block_size=2)
    sub = Subscriber(cfg["endpoint"], cfg["replay_endpoint"], "kv")
    try:
        assert pub.flush() is None, "nothing reported: no batch"
        keys = ["aa" * 32, "bb" * 32]
        for i in range(5):
            pub.stored("GPU", keys, None if i == 0 else "cc" * 32, [1, 2, 3, 4])
            pub.removed("CPU", keys[:1])
            assert pub.flush() == i
        # only the last 3 batches are kept: a replay from 0 answers 2, 3, 4 and the end mark
        sub.replay.send_multipart([b"", (0).to_bytes(8, "big")])
        got = []
        while True:
            empty, seq, payload = sub.replay.recv_multipart()
            if int.from_bytes(seq, "big", signed=True) == -1:
                break
            got.append(int.from_bytes(seq, "big"))
            batch = msgspec.msgpack.decode(payload, type=KVEventBatch)
            stored, removed = batch.events
            assert stored.block_hashes == [0xAAAAAAAAAAAAAAAA, 0xBBBBBBBBBBBBBBBB] and stored.medium == "GPU"
            assert stored.parent_block_hash == 0xCCCCCCCCCCCCCCCC and stored.token_ids == [1, 2, 3, 4]
            assert removed.block_hashes == [0xAAAAAAAAAAAAAAAA] and removed.medium == "CPU"
        assert got == [2, 3, 4]
        sub.replay.send_multipart([b"", b"bad"])  # malformed: ignored, the socket keeps serving
        last = replay_one(sub, 4)
        old = msgspec.msgpack.decode(last, type=FirstKVEventBatch)
        assert old.events[0].block_size == 2 and old.events[1].block_hashes == [0xAAAAAAAAAAAAAAAA]
    finally:
        pub.close()
        sub.close()


def replay_one(sub: Subscriber, seq: int) -> bytes:
    """The payload of the last kept batch `seq`, by replay."""
    sub.replay.send_multipart([b"", seq.to_bytes(8, "big")])
    _, got, payload = sub.replay.recv_multipart()
    assert int.from_bytes(got, "big") == seq
    assert int.from_bytes(sub.replay.recv_multipart()[1], "big", signed=True) == -1  # the end mark
    return payload


def test_replay_address_in_use_is_one_line_naming_the_flag(tmp_path):
    ctx = zmq.Context()
    taken = ctx.socket(zmq.ROUTER)
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    try:
        with pytest.raises(ValueError, match=r"^--kv-events-config: cannot bind tcp://127\.0\.0\.1:\d+: "):
            KVEventPublisher(KVEventsSettings(endpoint=f"ipc://{tmp_path}/p",
                                              replay_endpoint=f"tcp://127.0.0.1:{port}"), block_size=4)
    finally:
        ctx.destroy(linger=0)
