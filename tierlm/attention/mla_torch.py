"""Torch latent attention (MLA): each request's cached latents read through `req_to_token`. CPU and CUDA.

The model passes queries already absorbed into latent space, so every head attends over the same per-token
latent (one shared KV "head"): keys are whole latents, values their first `value_dim` entries.
"""
from __future__ import annotations

from typing import Optional

import torch

from tierlm.attention.base import AttentionBackend, ForwardBatch
from tierlm.kvcache.pool import KVPool, take_rows

SCORE_ELEMENTS = 1 << 26  # the most float32 scores one matmul materializes (256 MiB); longer queries go in blocks


class MLATorchBackend(AttentionBackend):
    """Reference latent attention: per request, scores `q · latent`, a causal mask offset by the prefix
    length, a float32 softmax and a mix of the latents' value parts.

    `forward(q, k, v, layer, batch)`: q `[T, H, head_dim]` (absorbed queries), k the new latents
    `[T, head_dim]` (stored at `batch.out_loc` in `pool["latent"][layer]`), v unused (None) →
    `[T, H * value_dim]`, still in latent space (the model applies its value up-projection).
    """

    def __init__(self, pool: KVPool, req_to_token: torch.Tensor, num_heads: int, head_dim: int, scale: float,
                 value_dim: int) -> None:
        super().__init__(pool, req_to_token, num_heads, head_dim, scale)
        self.value_dim = value_dim

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: Optional[torch.Tensor], layer: int,
                batch: ForwardBatch) -> torch.Tensor:
        self.wait_kv(layer)
        self.pool.store(layer, batch.out_loc, latent=k)
        out = torch.empty(q.shape[0], self.num_heads, self.value_dim, dtype=q.dtype, device=q.device)
        self.extend(q, out, layer, batch, len(batch.extend_lens_cpu))
        return out.reshape(q.shape[0], self.num_heads * self.value_dim)

    def extend(self, q: torch.Tensor, out: torch.Tensor, layer: int, batch: ForwardBatch, count: int) -> None:
        """Attention of the first `count` requests of `batch` (their new latents already stored), into
        their rows of `out`."""
        buf = self.pool.layers[layer]["latent"]
        start = 0
        for i, n in enumerate(batch.extend_lens_cpu[:count]):
            prefix, seq = batch.prefix_lens_cpu[i], batch.seq_lens_cpu[i]
            slots = self.req_to_token[batch.req_rows_cpu[i], :seq].long()
            latent = take_rows(buf, slots).to(q.dtype)  # [S, head_dim]
            block = max(1, SCORE_ELEMENTS // (self.num_heads * seq))
            for b in range(0, n, block):
                m = min(block, n - b)
                out[start + b:start + b + m] = self._attend(q[start + b:start + b + m], latent, prefix + b)
            start += n

    def _attend(self, q: torch.Tensor, latent: torch.Tensor, first_pos: int) -> torch.Tensor:
        """Queries `[m, H, D]` at positions `first_pos ..` over latents `[S, D]` → `[m, H, value_dim]`."""
        scores = torch.einsum("mhd,sd->hms", q, latent).float() * self.scale
        m, seq = q.shape[0], latent.shape[0]
        if first_pos + 1 < seq:  # a lone query at the last position sees everything
            qpos = torch.arange(first_pos, first_pos + m, device=q.device)[:, None]
            scores = scores.masked_fill(qpos < torch.arange(seq, device=q.device)[None, :], float("-inf"))
        probs = scores.softmax(dim=-1).to(q.dtype)
        return torch.einsum("hms,sv->mhv", probs, latent[:, :self.value_dim])

    def supports_cuda_graph(self) -> bool:
        return False

    def init_graph_buffers(self, max_bs: int, max_len: int) -> None:
        raise NotImplementedError("the torch MLA backend is not captured in CUDA graphs")

    def prepare_for_replay(self, batch: ForwardBatch) -> None:
        raise NotImplementedError("the torch MLA backend is not captured in CUDA graphs")
