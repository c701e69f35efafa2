"""`LatentUpProj`: a latent-attention model's per-layer key/value up-projections (`kv_b_proj`), held by its MLA
backend so that the backend, not the model, picks the form each request's attention runs in.

Latent attention can run in two forms that give the same result:
- absorbed: each head's non-rope query goes into latent space through its slice of the key up-projection
  (`q_nope · W_UK`), every head attends over the cached latents themselves (scores over `kv_lora_rank +
  rope_dim` columns, values `kv_lora_rank` wide), and the output comes back through `W_UV`. Nothing per key is
  up-projected, so it reads the least memory: the form for decode and for short extends.
- decompressed: every latent of the sequence is up-projected once to per-head keys (`nope_dim` columns plus
  the shared rope key) and values (`v_head_dim`), then ordinary causal attention. Per (query, key) pair and
  head that is `2 (nope + rope + v)` FLOPs against `2 (2 kv_lora_rank + rope)`, so long extends, which are
  compute bound, take this form.
Graph pieces capture the model's code between attention calls, so the form has to be chosen inside the
attention call, pass by pass: hence the backend owns the up-projections and the model passes its queries
before absorption and receives the heads' values.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class LatentForms:
    """When an extend request's attention runs decompressed rather than absorbed: its new tokens times its
    sequence length reach `min_work`, and the up-projected keys and values of its sequence (counted in
    elements, with the padding of values to the key width) stay within `max_elements`. Decode always runs
    absorbed. The default `min_work` (a 2K-token prompt) keeps prompts shorter than that absorbed: below it the
    decompressed form saves a few milliseconds per request at most, while a served mix of such prompts meets a
    new sequence length in nearly every request, which the attention library may pay for per shape."""

    min_work: int = 1 << 22
    max_elements: int = 1 << 28

    @classmethod
    def named(cls, name: str) -> "LatentForms":
        """`--mla-extend-form`: "auto" (these defaults), "absorbed" (never decompressed) or "decompressed" (every
        extend request, within `max_elements`)."""
        return {"auto": cls(), "absorbed": cls(min_work=1 << 62), "decompressed": cls(min_work=0)}[name]

    def decompresses(self, new_tokens: int, seq_len: int, elements: int) -> bool:
        """Whether an extend request of `new_tokens` over a `seq_len` sequence, whose decompressed form would hold
        `elements` (`LatentUpProj.decompressed_elements`), runs decompressed."""
        return new_tokens * seq_len >= self.min_work and elements <= self.max_elements

    def fresh_prompts(self, max_tokens: int, elements: Callable[[int], int]) -> range:
        """The lengths (up to `max_tokens`) of prompts without a prefix that run decompressed, given `elements`
        of a sequence length (increasing): from the least with `min_work` to the largest within
        `max_elements`."""
        least = math.isqrt(self.min_work - 1) + 1 if self.min_work > 1 else 1
        largest = bisect_right(range(1, max_tokens + 1), self.max_elements, key=elements)
        return range(least, largest + 1)


class LatentUpProj:
    """The `kv_b_proj` of every layer (`[heads * (nope_dim + v_head_dim), kv_lora_rank]` weights, read at each
    call, so loading and device moves need no hook) and the head widths needed to split them."""

    def __init__(self, projections: Sequence[nn.Linear], num_heads: int, nope_dim: int, rope_dim: int,
                 v_head_dim: int, kv_lora_rank: int) -> None:
        self.projections = list(projections)
        self.num_heads, self.nope_dim, self.rope_dim = num_heads, nope_dim, rope_dim
        self.v_head_dim, self.kv_lora_rank = v_head_dim, kv_lora_rank

    @property
    def qk_dim(self) -> int:
        """Width of a query head before absorption (and of a decompressed key head): nope then rope part."""
        return self.nope_dim + self.rope_dim

    def decompressed_elements(self, seq_len: int) -> int:
        """Elements the decompressed form materialises for a sequence of `seq_len` latents: the projection's
        output, the keys, and the values padded to the key width."""
        return seq_len * self.num_heads * (self.nope_dim + self.v_head_dim + 2 * self.qk_dim)

    def _weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`W_UK` `[H, nope_dim, kv_lora_rank]` and `W_UV` `[H, v_head_dim, kv_lora_rank]` of `layer`."""
        w = self.projections[layer].weight.view(self.num_heads, self.nope_dim + self.v_head_dim, self.kv_lora_rank)
        return w[:, :self.nope_dim], w[:, self.nope_dim:]

    def absorb_into(self, q: torch.Tensor, layer: int, out: torch.Tensor) -> None:
        """Queries `[T, H, nope + rope]` into latent space: `out` `[T, H, kv_lora_rank + rope]` gets `q_nope ·
        W_UK` then the rope part unchanged."""
        w_uk, _ = self._weights(layer)
        lora = self.kv_lora_rank
        torch.bmm(q[..., :self.nope_dim].transpose(0, 1), w_uk, out=out[..., :lora].transpose(0, 1))
        out[..., lora:].copy_(q[..., self.nope_dim:])

    def values_into(self, latent_out: torch.Tensor, layer: int, out: torch.Tensor) -> None:
        """Attention output in latent space `[T, H, kv_lora_rank]` through `W_UV` into `out` `[T, H, v_head_dim]`
        (any row strides; written in place, no copy)."""
        _, w_uv = self._weights(layer)
        torch.bmm(latent_out.transpose(0, 1), w_uv.transpose(1, 2), out=out.transpose(0, 1))

    def expand(self, latents: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents `[S, kv_lora_rank + rope]` → per-head keys `[S, H, nope + rope]` (the rope key shared by all
        heads) and values `[S, H, v_head_dim]`."""
        seq, heads, lora = latents.shape[0], self.num_heads, self.kv_lora_rank
        kv = torch.nn.functional.linear(latents[:, :lora], self.projections[layer].weight)
        kv = kv.view(seq, heads, self.nope_dim + self.v_head_dim)
        k = torch.empty(seq, heads, self.qk_dim, dtype=kv.dtype, device=kv.device)
        k[..., :self.nope_dim] = kv[..., :self.nope_dim]
        k[..., self.nope_dim:] = latents[:, None, lora:]
        return k, kv[..., self.nope_dim:]
