"""Torch latent attention (MLA): each request's cached latents read through `req_to_token`. CPU and CUDA.

Every head attends over the same per-token latent (one shared KV "head"): in the absorbed form keys are whole
latents and values their first `kv_lora_rank` entries. With the model's up-projections (`up_proj`, see
`tierlm.attention.mla_up_proj`) the backend takes the model's queries before absorption, picks the form per
request and returns the heads' values; without them it takes absorbed queries and returns latent-space output.
"""
from __future__ import annotations

import logging
import time
from itertools import accumulate
from typing import NamedTuple, Optional, Sequence

import torch

from tierlm.attention.base import AttentionBackend, ForwardBatch
from tierlm.attention.causal_sdpa import bucket_lengths, fresh_causal, offset_causal, plan_buckets
from tierlm.attention.mla_up_proj import LatentForms, LatentUpProj
from tierlm.kvcache.pool import KVPool, take_rows

logger = logging.getLogger(__name__)

SCORE_ELEMENTS = 1 << 26  # the most float32 scores one matmul materializes (256 MiB); longer queries go in blocks


class FormsPlan(NamedTuple):
    """One pass's forms (`MLATorchBackend._forms`): decompressed requests, absorbed ones, each request's first
    row, the absorbed requests' row spans (extend passes; None at decode) and the cache slots of the requests
    whose latents were read so far (`MLATorchBackend.slots`, filled at a request's first layer)."""

    wide: list[int]
    rest: Sequence[int]
    starts: Optional[list[int]]
    spans: Optional[list[tuple[int, int]]]
    slots: dict[int, torch.Tensor]


class MLATorchBackend(AttentionBackend):
    """Reference latent attention: per request, scores `q · latent`, a causal mask offset by the prefix
    length, a float32 softmax and a mix of the latents' value parts; long extends (`forms`) decompressed
    through torch's `scaled_dot_product_attention`.

    `forward(q, k, v, layer, batch)`: k the new latents `[T, head_dim]` (stored at `batch.out_loc` in
    `pool["latent"][layer]`), v unused (None). With `up_proj`: q `[T, H, up_proj.qk_dim]` (rope part rotated,
    not absorbed) → `[T, H * value_dim]`, the heads' values (`value_dim` = `up_proj.v_head_dim`). Without: q
    `[T, H, head_dim]` absorbed → `[T, H * value_dim]` still in latent space (`value_dim` = the latent's value
    part).
    """

    def __init__(self, pool: KVPool, req_to_token: torch.Tensor, num_heads: int, head_dim: int, scale: float,
                 value_dim: int, up_proj: Optional[LatentUpProj] = None, forms: LatentForms = LatentForms()) -> None:
        super().__init__(pool, req_to_token, num_heads, head_dim, scale)
        self.value_dim = value_dim
        self.up_proj, self.forms = up_proj, forms
        self.latent_value_dim = up_proj.kv_lora_rank if up_proj is not None else value_dim
        self._forms_of: Optional[ForwardBatch] = None  # the pass `_forms_plan` belongs to
        self._forms_plan = FormsPlan([], range(0), None, None, {})
        assert up_proj is None or (up_proj.v_head_dim == value_dim and up_proj.num_heads == num_heads
                                   and up_proj.kv_lora_rank + up_proj.rope_dim == head_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: Optional[torch.Tensor], layer: int,
                batch: ForwardBatch) -> torch.Tensor:
        out = torch.empty(q.shape[0], self.num_heads * self.value_dim, dtype=q.dtype, device=q.device)
        self.forward_into(q, k, v, layer, batch, out)
        return out

    def forward_into(self, q: torch.Tensor, k: torch.Tensor, v: Optional[torch.Tensor], layer: int,
                     batch: ForwardBatch, out: torch.Tensor) -> None:
        self.wait_kv(layer)
        self.pool.store(layer, batch.out_loc, latent=k)
        out = out.view(q.shape[0], self.num_heads, self.value_dim)
        up, (wide, rest, starts, spans, _) = self.up_proj, self._forms(batch)
        if up is None:
            self.attend_latent(q, out, layer, batch, rest)
            return
        if rest:  # absorbed, over the row spans of these requests (a decode pass: all rows, padding too)
            spans = spans or [(0, q.shape[0])]
            q_lat = torch.empty(q.shape[0], self.num_heads, self.head_dim, dtype=q.dtype, device=q.device)
            o_lat = torch.empty(q.shape[0], self.num_heads, self.latent_value_dim, dtype=q.dtype, device=q.device)
            for a, b in spans:
                up.absorb_into(q[a:b], layer, q_lat[a:b])
            self.attend_latent(q_lat, o_lat, layer, batch, rest)
            for a, b in spans:
                up.values_into(o_lat[a:b], layer, out[a:b])
        for i in wide:
            self.attend_decompressed(q, out, layer, batch, i, starts[i])

    def _forms(self, batch: ForwardBatch) -> FormsPlan:
        """The pass's `FormsPlan`, worked out once per pass (at its `prepare` or first layer) and kept for its
        other layers."""
        if self._forms_of is not batch:
            wide = self.decompressed_requests(batch)
            rest = [i for i in range(batch.batch_size) if i not in wide] if wide else range(batch.batch_size)
            starts, spans = [0, *accumulate(batch.extend_lens_cpu)], None
            if batch.mode != "decode":
                spans = []
                for i in rest:
                    if spans and spans[-1][1] == starts[i]:
                        spans[-1] = (spans[-1][0], starts[i + 1])
                    else:
                        spans.append((starts[i], starts[i + 1]))
            self._forms_of, self._forms_plan = batch, FormsPlan(wide, rest, starts, spans, {})
        return self._forms_plan

    def slots(self, batch: ForwardBatch, i: int) -> torch.Tensor:
        """The cache slots of request `i`'s sequence, taken once per pass (at its first layer) for every layer."""
        held = self._forms(batch).slots
        if i not in held:
            held[i] = self.req_to_token[batch.req_rows_cpu[i], :batch.seq_lens_cpu[i]].long()
        return held[i]

    def decompressed_requests(self, batch: ForwardBatch) -> list[int]:
        """The requests of an extend pass whose attention runs decompressed (`forms`); none at decode."""
        if batch.mode == "decode" or self.up_proj is None:
            return []
        forms, up = self.forms, self.up_proj
        return [i for i in range(batch.num_multi_token) if forms.decompresses(
            batch.extend_lens_cpu[i], batch.seq_lens_cpu[i], up.decompressed_elements(batch.seq_lens_cpu[i]))]

    def fresh_lengths(self, max_tokens: int) -> list[int]:
        """The padded lengths (`causal_sdpa.bucketed_length`) that prompts of up to `max_tokens` tokens without a
        prefix run their decompressed attention at; none without up-projections."""
        if self.up_proj is None:
            return []
        fresh = self.forms.fresh_prompts(max_tokens, self.up_proj.decompressed_elements)
        return bucket_lengths(fresh.start, fresh.stop - 1)

    def warm_up(self, max_tokens: int, dtype: torch.dtype) -> None:
        """Plans the decompressed attention of every length a fresh prompt of up to `max_tokens` tokens runs at
        (CUDA only: elsewhere no kernel builds a plan per shape)."""
        device, up = self.req_to_token.device, self.up_proj
        lengths = self.fresh_lengths(max_tokens) if device.type == "cuda" else []
        if lengths:
            t0 = time.perf_counter()
            plan_buckets(lengths, self.num_heads, up.qk_dim, up.v_head_dim, dtype, device, self.scale)
            torch.cuda.synchronize(device)
            logger.info("latent attention: %d prompt lengths from %d to %d tokens planned in %.2f s", len(lengths),
                        lengths[0], lengths[-1], time.perf_counter() - t0)

    def attend_decompressed(self, q: torch.Tensor, out: torch.Tensor, layer: int, batch: ForwardBatch, i: int,
                            start: int) -> None:
        """Request `i`'s queries (rows `start ..` of q, before absorption) over its up-projected latents, by
        torch's SDPA, into its rows of `out` `[T, H, v_head_dim]`."""
        up = self.up_proj
        n, prefix, seq = batch.extend_lens_cpu[i], batch.prefix_lens_cpu[i], batch.seq_lens_cpu[i]
        slots = self.slots(batch, i)
        keys, values = up.expand(take_rows(self.pool.layers[layer]["latent"], slots).to(q.dtype), layer)
        attend = offset_causal if prefix else fresh_causal
        out[start:start + n] = attend(q[start:start + n], keys, values, self.scale)

    def attend_latent(self, q: torch.Tensor, out: torch.Tensor, layer: int, batch: ForwardBatch,
                      requests: Sequence[int]) -> None:
        """Absorbed attention of `requests` of `batch` (their new latents already stored): q `[T, H, head_dim]`
        absorbed, their rows of `out` `[T, H, latent_value_dim]` written."""
        buf, starts = self.pool.layers[layer]["latent"], self._forms(batch).starts
        for i in requests:
            n, prefix, seq, start = batch.extend_lens_cpu[i], batch.prefix_lens_cpu[i], batch.seq_lens_cpu[i], starts[i]
            latent = take_rows(buf, self.slots(batch, i)).to(q.dtype)  # [S, head_dim]
            block = max(1, SCORE_ELEMENTS // (self.num_heads * seq))
            for b in range(0, n, block):
                m = min(block, n - b)
                out[start + b:start + b + m] = self._attend(q[start + b:start + b + m], latent, prefix + b)

    def _attend(self, q: torch.Tensor, latent: torch.Tensor, first_pos: int) -> torch.Tensor:
        """Queries `[m, H, D]` at positions `first_pos ..` over latents `[S, D]` → `[m, H, latent_value_dim]`."""
        scores = torch.einsum("mhd,sd->hms", q, latent).float() * self.scale
        m, seq = q.shape[0], latent.shape[0]
        if first_pos + 1 < seq:  # a lone query at the last position sees everything
            qpos = torch.arange(first_pos, first_pos + m, device=q.device)[:, None]
            scores = scores.masked_fill(qpos < torch.arange(seq, device=q.device)[None, :], float("-inf"))
        probs = scores.softmax(dim=-1).to(q.dtype)
        return torch.einsum("hms,sv->mhv", probs, latent[:, :self.latent_value_dim])

    def supports_cuda_graph(self) -> bool:
        return False

    def init_graph_buffers(self, max_bs: int, max_len: int) -> None:
        raise NotImplementedError("the torch MLA backend is not captured in CUDA graphs")

    def prepare_for_replay(self, batch: ForwardBatch) -> None:
        raise NotImplementedError("the torch MLA backend is not captured in CUDA graphs")

