"""Content keys of KV pages for the L3 store: a model fingerprint and chained per-page SHA-256 hashes.

A page's key depends on every token before it (its parent's hash is hashed in), so equal keys mean equal
prefixes, and `batch_exists` on a chain answers "how long a prefix does the store hold". The chain starts
from the model fingerprint, so two models never share a key and engines of the same model always do,
whatever their host, TP rank or process: nothing machine- or rank-specific is hashed.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from tierlm.kvcache.layout import KVLayout

# Bump when the byte order of a stored page changes (page-first order, codec header); what the bytes are
# (buffers, shapes, dtypes per layer) is hashed from the model's KVLayout.
LAYOUT_VERSION = "page-first-v2"
# Config keys that do not change the KV a model computes.
_IGNORED_CONFIG_KEYS = ("_name_or_path", "transformers_version", "architectures_version", "use_cache",
                        "torch_dtype", "dtype")
_SAMPLE = 64 * 1024  # bytes read at each of a few offsets of every weight file


def weights_identity(model_dir: Optional[Path], load_format: str, seed: int) -> str:
    """A short string naming the weights: the seed for dummy weights, else a digest of every safetensors
    file's name, size, header and three 64 KiB content samples (fine-tunes of one shape differ there)."""
    if load_format == "dummy":
        return f"dummy-seed-{seed}"
    h = hashlib.sha256()
    files = sorted(Path(model_dir).glob("*.safetensors")) if model_dir else []
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}\n".encode())
        with open(f, "rb") as fh:
            head = fh.read(8)
            header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            h.update(fh.read(min(header_len, 16 << 20)))
            data_start = 8 + header_len
            for off in (data_start, data_start + max(0, (size - data_start) // 2), max(data_start, size - _SAMPLE)):
                fh.seek(off)
                h.update(fh.read(_SAMPLE))
    return "sha256-" + h.hexdigest()


def model_fingerprint(model_config: Mapping[str, Any], weights_id: str, layout: KVLayout, page_size: int) -> str:
    """Hex digest naming everything that decides a page's bytes: architecture config, weights, the KV
    layout (buffers, per-token shapes and dtypes of every layer), page size and the byte-order version."""
    cfg = {k: v for k, v in model_config.items() if k not in _IGNORED_CONFIG_KEYS}
    doc = {"config": cfg, "weights": weights_id, "kv_layout": layout.describe(), "page_size": int(page_size),
           "layout": LAYOUT_VERSION}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


class PageHasher:
    """Computes the chained page keys of token sequences for one model fingerprint."""

    def __init__(self, fingerprint: str, page_size: int) -> None:
        self.fingerprint = fingerprint
        self.page_size = page_size
        self.root = hashlib.sha256(b"tierlm-kv\0" + fingerprint.encode()).digest()

    def chain(self, tokens: Sequence[int], parent: Optional[str] = None) -> list[str]:
        """Hex keys of every whole page of `tokens`; `parent` is the key of the page before `tokens[0]`
        (None when `tokens` starts the sequence)."""
        prev = bytes.fromhex(parent) if parent else self.root
        n = len(tokens) - len(tokens) % self.page_size
        raw, step, sha, out = struct.pack(f"<{n}I", *tokens[:n]), 4 * self.page_size, hashlib.sha256, []
        for off in range(0, len(raw), step):  # each page: sha256(previous key + its tokens as uint32 LE)
            prev = sha(prev + raw[off:off + step]).digest()
            out.append(prev.hex())
        return out


def page_keys(hasher: PageHasher, tokens: Sequence[int],
              known: Optional[tuple[int, list[str]]] = None) -> Callable[[int, Optional[str]], list[str]]:
    """`keys(first, parent)`: the keys of the whole pages of `tokens` from page `first` on, chained from
    `parent`, the key of page `first - 1` as the prefix cache holds it (None: hash from the start). Keys
    of a prefix the cache already holds are not computed again: on the scheduler's thread, hashing a long
    conversation on every turn costs in proportion to all of it. `known` = (page `a`, the keys of pages
    `a`, `a + 1`, ... of these same tokens), computed earlier (the L3 lookup at the request's arrival):
    those are taken as they are, since a key depends on nothing but the tokens up to its page."""
    ps = hasher.page_size

    def keys(first: int, parent: Optional[str]) -> list[str]:
        if first and parent is None:
            return hasher.chain(tokens)[first:]
        end = len(tokens) // ps
        start, cached = known or (0, [])
        cached = cached[:max(0, end - start)]
        if not cached or first >= start + len(cached) or first >= end:
            return hasher.chain(tokens[first * ps:], parent)
        out = hasher.chain(tokens[first * ps:start * ps], parent) if first < start else []
        out += cached[max(0, first - start):]
        return out + hasher.chain(tokens[(start + len(cached)) * ps:], out[-1])
    return keys
