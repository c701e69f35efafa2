"""The bytes of a KV-event batch, in the positional msgpack layout of vLLM's `KVEventBatch`.

vLLM declares its events as msgspec structs with `array_like=True` and `tag=True`, so each is an array whose
first item is the class name and whose other items are the fields in declaration order (trailing fields
left at their default are omitted). TierLM writes the same arrays with plain msgpack:

    EventBatch       [ts: float, events: list, data_parallel_rank: int]
    BlockStored      ["BlockStored", block_hashes: list[int], parent_block_hash: int | None,
                      token_ids: list[int], block_size: int, lora_id: None, medium: str, lora_name: None]
    BlockRemoved     ["BlockRemoved", block_hashes: list[int], medium: str]
    AllBlocksCleared ["AllBlocksCleared"]

Decoders declared for older vLLM releases (fewer trailing fields) ignore the extra items.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import msgpack

DATA_PARALLEL_RANK = 0  # one engine is one data-parallel rank


def block_hash(page_key: str) -> int:
    """A page's block hash: the first 8 bytes of its SHA-256 chained key as an unsigned big-endian int
    (consumers expect 64-bit ints; the chain makes it depend on every token before the page too)."""
    return int(page_key[:16], 16)


def block_stored(page_keys: Sequence[str], parent_key: Optional[str], token_ids: Sequence[int], block_size: int,
                 medium: str) -> list[Any]:
    return ["BlockStored", [block_hash(k) for k in page_keys],
            block_hash(parent_key) if parent_key is not None else None, list(token_ids), block_size, None, medium,
            None]


def block_removed(page_keys: Sequence[str], medium: str) -> list[Any]:
    return ["BlockRemoved", [block_hash(k) for k in page_keys], medium]


def all_blocks_cleared() -> list[Any]:
    return ["AllBlocksCleared"]


def encode_batch(events: list[list[Any]], ts: Optional[float] = None) -> bytes:
    """One `KVEventBatch` payload (the third frame of a published message)."""
    return msgpack.packb([time.time() if ts is None else ts, events, DATA_PARALLEL_RANK], use_bin_type=True)
