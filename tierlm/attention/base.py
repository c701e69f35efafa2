"""`AttentionBackend`: the swap point for attention kernels, and `ForwardBatch`, the metadata they read."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import torch

from tierlm.kvcache.pool import KVPool
from tierlm.kvcache.transfer import LayerLoads


@dataclass
class ForwardBatch:
    """Everything one forward pass needs besides the weights, for `B` requests and `T` new tokens.

    Request `i` owns row `req_rows[i]` of the request→token table; its first `prefix_lens[i]` positions
    already have KV, and this pass adds `extend_lens[i]` tokens (1 for decode) at positions
    `prefix_lens[i] .. seq_lens[i]-1`, written to slots `out_loc` (flattened in request order).
    """

    mode: str  # "prefill" (any extend, including chunks and prefix hits) | "decode" (one token each)
    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    out_loc: torch.Tensor  # [T] int64 slots
    req_rows: torch.Tensor  # [B] int32
    prefix_lens: torch.Tensor  # [B] int32
    seq_lens: torch.Tensor  # [B] int32
    qo_indptr: torch.Tensor  # [B + 1] int32: new tokens of request i are [qo_indptr[i], qo_indptr[i + 1])
    extend_lens_cpu: list[int]
    prefix_lens_cpu: list[int]
    seq_lens_cpu: list[int]
    req_rows_cpu: list[int]
    variant: int = 0  # decode: which of the backend's `decode_variants` a captured pass takes (the graph runner's)

    @property
    def batch_size(self) -> int:
        return len(self.extend_lens_cpu)

    @property
    def num_multi_token(self) -> int:
        """Requests before the run of one-token requests that ends the batch (a mixed step's decodes, which
        backends may serve with their decode kernel: one new token attending to its whole sequence)."""
        ext = self.extend_lens_cpu
        return len(ext) - next((i for i, n in enumerate(reversed(ext)) if n != 1), len(ext))


class AttentionBackend(ABC):
    """Computes causal attention of a batch's new tokens over their whole sequence through `req_to_token`.

    Contract: `forward` first waits for layer `layer`'s loads (`wait_kv`), stores the new KV into its slots
    (`batch.out_loc`) of that layer, then attends each request's queries to KV positions `[0, seq_len)` with
    a causal mask offset by the prefix length. `kv_loads`, set by the model runner for one forward, is the
    KV side's handle of pages still arriving from the host tier; models never see it.

    CUDA graphs: `supports_cuda_graph()` says whether decode passes of this backend may be captured; if so,
    `init_graph_buffers` runs once before any capture and `prepare_for_replay` replaces `prepare` for every
    captured or replayed batch. A backend with several decode launches for one batch size names them in
    `decode_variants` (each captured as a graph of its own) and picks one per step by `decode_variant`.
    """

    def __init__(self, pool: KVPool, req_to_token: torch.Tensor, num_heads: int, head_dim: int,
                 scale: float) -> None:
        self.pool = pool
        self.req_to_token = req_to_token
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = scale
        self.kv_loads: Optional[LayerLoads] = None

    def wait_kv(self, layer: int) -> None:
        """Queue a wait for `layer`'s loaded pages on the compute stream (no-op when nothing is loading)."""
        if self.kv_loads is not None:
            self.kv_loads.wait(layer)

    def warm_up(self, max_tokens: int, dtype: torch.dtype) -> None:
        """Before serving: build whatever the backend's kernels plan per shape for passes of up to `max_tokens` new
        tokens in `dtype` (no-op for backends whose kernels plan nothing per shape)."""

    def prepare(self, batch: ForwardBatch) -> None:
        """Build per-step metadata shared by all layers (no-op for backends that need none)."""

    @abstractmethod
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int,
                batch: ForwardBatch) -> torch.Tensor:
        """q `[T, H, D]`, k/v `[T, KVH, D]` → output `[T, H * D]`."""

    def forward_into(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, batch: ForwardBatch,
                     out: torch.Tensor) -> None:
        """`forward` with its output written into `out` `[T, H * D]` (a static buffer that replayed graph pieces
        read); a backend whose kernels take an output buffer overrides this to save the copy."""
        out.copy_(self.forward(q, k, v, layer, batch))

    def fuses_rope(self, batch: ForwardBatch) -> bool:
        """Whether `forward` takes this batch's q and k straight from the QKV projection, before the q/k norm
        and rotary, and applies them itself (given as `forward(..., rope=QKRope)`); a backend that says so
        must accept that keyword. Saves the step a pass over q and k of its own."""
        return False

    @abstractmethod
    def supports_cuda_graph(self) -> bool:
        """Whether decode passes through this backend can be captured as CUDA graphs."""

    @abstractmethod
    def init_graph_buffers(self, max_bs: int, max_len: int) -> None:
        """Preallocate static decode metadata for batch sizes up to `max_bs` (before any capture)."""

    @abstractmethod
    def prepare_for_replay(self, batch: ForwardBatch) -> None:
        """Decode metadata of a captured pass from `batch` (padded to a captured size; `batch.variant` is the
        launch it captures). Its tensors are the graph runner's static buffers, refreshed before every replay: the
        backend may read them in place."""

    def decode_variants(self, batch_size: int) -> tuple[int, ...]:
        """The decode launches a step of this size may take (0: the backend's usual one), each captured as a graph
        of its own; a backend with one launch per size keeps `(0,)`."""
        return (0,)

    def decode_variant(self, seq_lens: list[int]) -> int:
        """Which of `decode_variants` a decode step with these lengths takes (the step's own, unpadded, on the
        host: the choice costs no device read); `prepare` makes the same choice for an eager step."""
        return 0

    def supports_mixed_graph(self) -> bool:
        """Whether whole mixed passes (prefill chunks, then decodes) through this backend can be captured."""
        return False

    def prepare_mixed_replay(self, batch: ForwardBatch, num_chunks: int, chunk_rows: int) -> None:
        """Metadata of a captured mixed pass from the runner's static buffers in `batch`: its first `num_chunks`
        requests (some without tokens) extend over its first `chunk_rows` rows, the rest (none in a prefill pass)
        decode one row each (padded to a captured decode size). Refreshes the decode scratch as
        `prepare_for_replay` does."""
        raise NotImplementedError(f"{type(self).__name__} does not capture mixed passes")
