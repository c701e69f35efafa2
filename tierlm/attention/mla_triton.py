"""Triton latent attention (MLA): split-KV decode over the latent cache, CUDA-graph capturable; extends
(prefill, chunks, prefix hits) in one flash-style launch per layer, except the one-token requests that end an
extend pass (a mixed step's decodes), which take the decode kernel.

Decode is where latent attention is memory bound and launch bound: the kernel reads each request's latents
in place through `req_to_token`, once per block of heads, and needs only the batch's `req_rows`/`seq_lens`
plus float32 split scratch sized by the batch size. Extends are compute bound: `tierlm.kernels.mla_extend`
reads the same latents (the new tokens' stored first) for a block of tokens times heads per tile, where the
torch path loops over requests on the host and materialises every score. Long extends leave the absorbed form
altogether (`MLATorchBackend.decompressed_requests`): their latents are up-projected once and attended through
torch's SDPA, which does fewer FLOPs per (query, key) pair.

CUDA graphs (decode), as in `tierlm.attention.triton_backend`: `init_graph_buffers(max_bs, max_len)` once,
then `prepare_for_replay(batch)` instead of `prepare` for capture and every replay; the kernel reads the
runner's static `req_rows`/`seq_lens` in place and writes static scratch whose shape depends only on the
(padded) batch size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from tierlm.attention.base import ForwardBatch
from tierlm.attention.decode_scratch import DecodeMeta, DecodeScratch
from tierlm.attention.mla_torch import MLATorchBackend
from tierlm.attention.mla_up_proj import LatentForms, LatentUpProj
from tierlm.kernels.mla_decode import mla_decode
from tierlm.kernels.mla_extend import MLAExtendConfig, mla_extend
from tierlm.kernels.request_splits import choose_max_splits
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

    Same contract as `MLATorchBackend` (queries before absorption with the model's `up_proj`, absorbed ones
    without; k the new latents `[T, head_dim]`, v unused); long extends decompressed as there.
    """

    def __init__(self, pool: KVPool, req_to_token: torch.Tensor, num_heads: int, head_dim: int, scale: float,
                 value_dim: int, up_proj: Optional[LatentUpProj] = None, forms: LatentForms = LatentForms(),
                 config: MLATritonConfig | None = None) -> None:
        super().__init__(pool, req_to_token, num_heads, head_dim, scale, value_dim, up_proj, forms)
        self.device = req_to_token.device
        self.config = config or MLATritonConfig.for_device(self.device)
        self.num_sms = (torch.cuda.get_device_properties(self.device).multi_processor_count
                        if self.device.type == "cuda" else 4)
        self._meta: Optional[DecodeMeta] = None  # decode-kernel metadata of the pass's one-token requests
        self._num_extend = 0  # requests of the pass that take the extend kernel (the leading ones)
        self._extend_args: Optional[tuple] = None  # the extend kernel's arguments for the pass (`prepare`)
        self._scratch = DecodeScratch(num_heads, self.latent_value_dim, self.max_splits, self.device)

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
        self._extend_args = self._extend_metadata(batch, [i for i in self._forms(batch).rest if i < e])

    def init_graph_buffers(self, max_bs: int, max_len: int) -> None:
        """Preallocate decode metadata for batch sizes up to `max_bs` (call once, before any capture)."""
        assert max_len <= self.req_to_token.shape[1]
        self._scratch.init_graph(max_bs)

    def prepare_for_replay(self, batch: ForwardBatch) -> None:
        """Point the decode metadata at `batch`'s static rows and lengths (already padded to the graph's size)."""
        assert batch.mode == "decode", "graphs are decode-only"
        self._meta = self._scratch.for_replay(batch.req_rows, batch.seq_lens)

    def attend_latent(self, q: torch.Tensor, out: torch.Tensor, layer: int, batch: ForwardBatch,
                      requests: Sequence[int]) -> None:
        """Absorbed attention of `requests` (the pass's absorbed ones, whose extend metadata `prepare` built; all
        of its one-token requests among them): the extend kernel for the multi-token ones, the decode kernel for
        the rest (rows `[t:]`, a captured pass's padding too)."""
        meta, cfg = self._meta, self.config
        assert meta is not None or batch.mode != "decode", "prepare(batch) must run before a decode forward"
        if batch.mode != "decode" and self._extend_args is not None:
            mla_extend(q, self.pool.layers[layer]["latent"], out, self.req_to_token, *self._extend_args)
        if meta is not None:
            t = q.shape[0] - meta.req_rows.shape[0]
            mla_decode(q[t:], self.pool.layers[layer]["latent"], self.req_to_token, meta.req_rows, meta.seq_lens,
                       out[t:], meta.mid_o, meta.mid_lse, self.scale, min_chunk=cfg.min_chunk, block_n=cfg.block_n,
                       block_h=cfg.block_h, num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    def _extend_metadata(self, batch: ForwardBatch, requests: list[int]) -> Optional[tuple]:
        """`mla_extend`'s arguments after the pool for `requests` (multi-token ones of the pass; None if there are
        none): slices of the pass's metadata where they are consecutive, gathered copies otherwise."""
        if not requests:
            return None
        i0, i1 = requests[0], requests[-1] + 1
        if i1 - i0 == len(requests):
            rows, prefix = batch.req_rows[i0:i1], batch.prefix_lens[i0:i1]
            starts, ends = batch.qo_indptr[i0:i1], batch.qo_indptr[i0 + 1:i1 + 1]
        else:
            idx = torch.tensor(requests, dtype=torch.int64, pin_memory=self.device.type == "cuda")
            idx = idx.to(self.device, non_blocking=True)
            rows, prefix, starts, ends = (batch.req_rows[idx], batch.prefix_lens[idx], batch.qo_indptr[idx],
                                          batch.qo_indptr[idx + 1])
        return (rows, prefix, starts, [batch.extend_lens_cpu[i] for i in requests], self.scale, self.config.extend,
                ends)
