"""`KVEventsSettings`: the KV-event publisher that `--kv-events-config` asks for, parsed and checked.

A JSON object with the keys and defaults vLLM and SGLang use, so a router or indexer built for their KV events
configures TierLM's publisher the same way. It sits below `tierlm.config`, which validates the flag with it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class KVEventsSettings:
    """The KV-event publisher of `--kv-events-config`, with the keys and defaults vLLM and SGLang use."""

    endpoint: str = "tcp://*:5557"
    replay_endpoint: Optional[str] = None
    buffer_steps: int = 10_000  # event batches kept for replay
    hwm: int = 100_000  # ZMQ high-water mark of the PUB socket
    max_queue_size: int = 100_000  # batches waiting for the publisher thread before the engine blocks
    topic: str = ""


_KV_EVENT_KEYS = {"enable_kv_cache_events": bool, "publisher": str, "endpoint": str,
                  "replay_endpoint": (str, type(None)), "buffer_steps": int, "hwm": int, "max_queue_size": int,
                  "topic": str}


def parse_kv_events_config(text: Optional[str]) -> Optional[KVEventsSettings]:
    """The publisher settings of a `--kv-events-config` JSON object, or None when it asks for no events
    (as in vLLM: `publisher` defaults to "zmq" when `enable_kv_cache_events` is true, else "null").
    Raises ValueError naming the flag."""
    if text is None:
        return None

    def bad(why: str) -> ValueError:
        return ValueError(f"--kv-events-config: {why}")

    try:
        doc = json.loads(text)
    except ValueError as e:
        raise bad(f"not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise bad('must be a JSON object, e.g. \'{"publisher": "zmq", "endpoint": "tcp://*:5557"}\'')
    for key, value in doc.items():
        want = _KV_EVENT_KEYS.get(key)
        if want is None:
            raise bad(f"unknown key {key!r} (known: {', '.join(sorted(_KV_EVENT_KEYS))})")
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise bad(f"{key} has the wrong type ({type(value).__name__})")
    enabled = doc.pop("enable_kv_cache_events", None)
    publisher = doc.pop("publisher", "zmq" if enabled else "null")
    if publisher not in ("zmq", "null"):
        raise bad(f"unknown publisher {publisher!r} (zmq or null)")
    for key in ("buffer_steps", "max_queue_size"):
        if doc.get(key, 1) < 1:
            raise bad(f"{key} must be >= 1, got {doc[key]}")
    if doc.get("hwm", 0) < 0:
        raise bad(f"hwm must be >= 0, got {doc['hwm']}")
    if publisher == "null" or enabled is False:
        return None
    settings = KVEventsSettings(**doc)
    for key in ("endpoint", "replay_endpoint"):
        addr = getattr(settings, key)
        if addr is not None and not addr.startswith(("tcp://", "ipc://", "inproc://")):
            raise bad(f"{key} {addr!r} is not a ZMQ address (tcp://, ipc:// or inproc://)")
    return settings
