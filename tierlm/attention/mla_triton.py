"""Triton latent attention (MLA): split-KV decode over the latent cache, CUDA-graph capturable; extends
(prefill, chunks, prefix hits) in one flash-style launch per layer, except the one-token requests that end an
extend pass (a mixed step's decodes), which take the decode kernel.

Decode is where latent attention is memory bound and launch bound: the kernel reads each request's latents
in place through `req_to_token`, once per block of heads, and needs only the batch's `req_rows`/`seq_lens`
plus float32 split scratch sized by the batch size. Extends are compute bound: `tierlm.kernels.mla_extend`
reads the same latents (the new tokens' stored first) for a block of tokens times heads per tile, where the
torch path loops over requests on the host and materialises every score.

CUDA graphs (decode), as in `tierlm.attention.triton_backend`: `init_graph_buffers(max_bs, max_len)` once,
then `prepare_for_replay(batch)` instead of `prepare` for capture and every replay; the kernel reads the
runner's static `req_rows`/`seq_lens` in place and writes static scratch whose shape depends only on the
(padded) batch size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from tierlm.attention.base import ForwardBatch
from tierlm.attention.decode_scratch import DecodeMeta, DecodeScratch
from tierlm.attention.mla_torch import MLATorchBackend
from tierlm.kernels.decode_attention import choose_max_splits
from tierlm.kernels.mla_decode import mla_decode
from tierlm.kernels.mla_extend import MLAExtendConfig, mla_extend
from tierlm.kvcache.pool import KVPool
from tierlm.utils.triton_mode import compiled_on_gpu


@dataclass(frozen=True)
class MLATritonConfig:
    """Decode launch parameters (and the extend kernel's, `extend`). GPU defaults are untuned starting points
    (one 16-head block per program, 32-token latent tiles); the interpreter gets small tiles so CPU tests stay
    fast."""

    block_n: int = 32
    block_h: int = 16
    min_chunk: int = 128  # fewest latents worth a split of their own
    waves: int = 4  # stage-1 programs per SM the split count aims for
    num_warps: int = 4
    num_stages: int = 2
    extend: MLAExtendConfig = MLAExtendConfig()

    @classmethod
    def for_device(cls, device: torch.device) -> "MLATritonConfig":
        if not compiled_on_gpu(device):
            return cls(block_n=16, min_chunk=16, num_stages=1,
                       extend=MLAExtendConfig(block_n=16, num_warps=4, num_stages=1))
        return cls()


class MLATritonBackend(MLATorchBackend):
    """Latent attention with a Triton decode kernel (CUDA, or Triton's interpreter on CPU for tests).

    Same contract as `MLATorchBackend`: q `[T, H, head_dim]` absorbed queries (latent part then rope part),
    k the new latents `[T, head_dim]`, v unused → `[T, H * value_dim]` in latent space.
    """

    def __init__(self, pool: KVPool, req_to_token: torch.Tensor, num_heads: int, head_dim: int, scale: float,
                 value_dim: int, config: MLATritonConfig | None = None) -> None:
        super().__init__(pool, req_to_token, num_heads, head_dim, scale, value_dim)
        self.device = req_to_token.device
        self.config = config or MLATritonConfig.for_device(self.device)
        self.num_sms = (torch.cuda.get_device_properties(self.device).multi_processor_count
                        if self.device.type == "cuda" else 4)
        self._meta: Optional[DecodeMeta] = None  # decode-kernel metadata of the pass's one-token requests
        self._num_extend = 0  # requests of the pass that take the extend kernel (the leading ones)
        self._scratch = DecodeScratch(num_heads, value_dim, self.max_splits, self.device)

    def supports_cuda_graph(self) -> bool:
        return True

    def max_splits(self, batch_size: int) -> int:
        """KV splits per request for a decode batch of this size (a function of the size only)."""
        head_blocks = -(-self.num_heads // max(16, self.config.block_h))
        return choose_max_splits(batch_size, head_blocks, self.num_sms, waves=self.config.waves)

    def prepare(self, batch: ForwardBatch) -> None:
        if batch.mode == "decode":
            self._meta, self._num_extend = self._scratch.for_batch(batch.req_rows, batch.seq_lens), 0
            return
        # an extend pass: the one-token requests that end it (a mixed step's decodes) take the decode kernel
        e = self._num_extend = batch.num_multi_token
        self._meta = (self._scratch.for_batch(batch.req_rows[e:], batch.seq_lens[e:]) if e < batch.batch_size
                      else None)

    def init_graph_buffers(self, max_bs: int, max_len: int) -> None:
        """Preallocate decode metadata for batch sizes up to `max_bs` (call once, before any capture)."""
        assert max_len <= self.req_to_token.shape[1]
        self._scratch.init_graph(max_bs)

    def prepare_for_replay(self, batch: ForwardBatch) -> None:
        """Point the decode metadata at `batch`'s static rows and lengths (already padded to the graph's size)."""
        assert batch.mode == "decode", "graphs are decode-only"
        self._meta = self._scratch.for_replay(batch.req_rows, batch.seq_lens)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: Optional[torch.Tensor], layer: int,
                batch: ForwardBatch) -> torch.Tensor:
        out = torch.empty(q.shape[0], self.num_heads * self.value_dim, dtype=q.dtype, device=q.device)
        self.forward_into(q, k, v, layer, batch, out)
        return out

    def forward_into(self, q: torch.Tensor, k: torch.Tensor, v: Optional[torch.Tensor], layer: int,
                     batch: ForwardBatch, out: torch.Tensor) -> None:
        meta, cfg = self._meta, self.config
        assert meta is not None or batch.mode != "decode", "prepare(batch) must run before a decode forward"
        self.wait_kv(layer)
        self.pool.store(layer, batch.out_loc, latent=k)
        out = out.view(q.shape[0], self.num_heads, self.value_dim)
        t = q.shape[0] - (meta.req_rows.shape[0] if meta is not None else 0)  # rows of the decode kernel: [t:]
        if batch.mode != "decode" and self._num_extend:
            self.extend(q, out, layer, batch, self._num_extend)
        if meta is not None:
            mla_decode(q[t:], self.pool.layers[layer]["latent"], self.req_to_token, meta.req_rows, meta.seq_lens,
                       out[t:], meta.mid_o, meta.mid_lse, self.scale, min_chunk=cfg.min_chunk, block_n=cfg.block_n,
                       block_h=cfg.block_h, num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    def extend(self, q: torch.Tensor, out: torch.Tensor, layer: int, batch: ForwardBatch, count: int) -> None:
        """Attention of the first `count` requests of `batch` (their new latents already stored) into their rows
        of `out`, by the extend kernel."""
        mla_extend(q, self.pool.layers[layer]["latent"], out, self.req_to_token, batch.req_rows[:count],
                   batch.prefix_lens[:count], batch.qo_indptr[:count + 1], batch.extend_lens_cpu[:count],
                   self.scale, self.config.extend)
