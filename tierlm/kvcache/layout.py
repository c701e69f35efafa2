"""`KVLayout`: what one token of KV cache is, per layer, as a model declares it.

The model (through its attention type) says which named buffers each layer keeps per token — GQA: `k` and
`v` of `[kv_heads, head_dim]`; multi-head latent attention: one `latent` of `[kv_lora_rank + rope_dim]` —
and everything below the attention backend (device pool, host pool, page transfers, L3 pages, page keys)
works from this description alone and moves opaque bytes. Adding an attention type never touches the tiers.

Byte order of one page everywhere outside the device pool (host pool, staging buffers, L3 values):
layer-major, then buffer order, each buffer's `page_size` tokens contiguous — "page-first".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

_DTYPES = {str(d).replace("torch.", ""): d for d in (torch.float32, torch.bfloat16, torch.float16, torch.float8_e4m3fn,
                                                     torch.float8_e5m2, torch.int8, torch.uint8)}


def dtype_name(dtype: torch.dtype | str) -> str:
    """`bfloat16` for torch.bfloat16 (or for the string itself)."""
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise ValueError(f"unsupported KV dtype {dtype!r}")
    return name


@dataclass(frozen=True)
class KVBuffer:
    """One named per-token KV buffer of a layer: `shape` per token, `dtype` by name (e.g. 'bfloat16')."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        object.__setattr__(self, "shape", tuple(int(x) for x in self.shape))
        if not self.name or not self.shape or any(x < 1 for x in self.shape):
            raise ValueError(f"KV buffer {self.name!r}: shape {self.shape} must be non-empty and positive")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def bytes_per_token(self) -> int:
        return math.prod(self.shape) * self.torch_dtype.itemsize


@dataclass(frozen=True)
class KVLayout:
    """Per layer, the tuple of buffers one token keeps. Build with `uniform` for the usual same-every-layer
    case; `describe()` is the canonical form hashed into L3 page keys."""

    layers: tuple[tuple[KVBuffer, ...], ...]

    def __post_init__(self) -> None:
        if not self.layers or any(not bufs for bufs in self.layers):
            raise ValueError("a KV layout needs at least one layer, each with at least one buffer")
        for bufs in self.layers:
            names = [b.name for b in bufs]
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate KV buffer names in a layer: {names}")

    @classmethod
    def uniform(cls, num_layers: int, buffers: Sequence[KVBuffer]) -> "KVLayout":
        return cls(tuple(tuple(buffers) for _ in range(num_layers)))

    @classmethod
    def gqa(cls, num_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype | str) -> "KVLayout":
        """K and V of `[kv_heads, head_dim]` per token and layer."""
        return cls.uniform(num_layers, [KVBuffer("k", (kv_heads, head_dim), dtype),
                                        KVBuffer("v", (kv_heads, head_dim), dtype)])

    @classmethod
    def latent(cls, num_layers: int, width: int, dtype: torch.dtype | str) -> "KVLayout":
        """One latent vector of `width` per token and layer, shared by every head (MLA)."""
        return cls.uniform(num_layers, [KVBuffer("latent", (width,), dtype)])

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def bytes_per_token(self, layer: int) -> int:
        return sum(b.bytes_per_token for b in self.layers[layer])

    @property
    def bytes_per_token_all_layers(self) -> int:
        return sum(self.bytes_per_token(layer) for layer in range(self.num_layers))

    def page_bytes(self, page_size: int) -> int:
        """Bytes of one page (all layers) in the page-first order."""
        return page_size * self.bytes_per_token_all_layers

    def layer_offset(self, layer: int, page_size: int) -> int:
        """Byte offset of `layer`'s part within a page-first page."""
        return page_size * sum(self.bytes_per_token(i) for i in range(layer))

    def regions(self) -> Iterator[tuple[int, KVBuffer]]:
        """(layer, buffer) in page-first order: the order of the chunks of one page."""
        for layer, bufs in enumerate(self.layers):
            for b in bufs:
                yield layer, b

    def describe(self) -> list:
        """A JSON-able canonical description (what page bytes mean), for page keys and fingerprints."""
        return [[[b.name, list(b.shape), b.dtype] for b in bufs] for bufs in self.layers]
