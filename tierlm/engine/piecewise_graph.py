"""`PiecewiseGraphRunner`: extend passes (prefill chunks, mixed steps) as CUDA graphs cut at every attention call.

An eager extend pass of a small model launches a dozen kernels per layer outside attention (norms, projections,
rotary, MLP, all-reduce), and its host time exceeds its device time: a mixed step then costs its decodes far more
than a graph-replayed decode step. Attention cannot be captured once for every batch (its grid and metadata follow
the requests), but everything between two attention calls is token-wise, so for a padded token count it is one
graph. A pass of T tokens is then: copy the input ids and positions into static buffers, replay piece 0
(embedding to the first layer's q/k/v), run attention eagerly on the first T rows of that q/k/v with this pass's
own metadata, writing its output into a static buffer, replay piece 1, and so on; the last piece ends with the
final norm. Padding rows only ever pass through token-wise pieces and are never read. A decode batch larger
than the largest decode graph runs the same way (its attention takes the decode path).

Capture runs the model's own forward with `_Cut` in place of the attention backend: each call ends the graph being
captured and begins the next. Attention reads q/k/v where the piece before it wrote them, through views that do
not hold that memory (`borrow`): the pieces share one memory pool, so a later piece (or a pass of another size)
may reuse it, but only after this layer's attention has read it, in stream order, which is the order of capture
within a pass; holding the tensors instead would grow the pool with depth and with every captured size. Only
models that declare `piecewise_graph_safe` (no host synchronisation and nothing data-dependent between attention
calls: mixture-of-experts routing qualifies where it stays on the device, as the fused kernels' does) are
captured. A latent-attention model passes no `v` (its values are part of the latent `k`): the shared output then
takes the width of its backend's `value_dim` (`attention_params`).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

import torch

from tierlm.attention.base import AttentionBackend, ForwardBatch
from tierlm.engine.graph_upload import upload

logger = logging.getLogger(__name__)


def token_ladder(max_tokens: int) -> list[int]:
    """Padded token counts captured: by 16 to 128, then eight steps per doubling (by 32 to 256, by 64 to 512,
    ...) up to `max_tokens`: a pass pads by less than 16 tokens or a quarter of its size."""
    sizes, step, n = [], 16, 16
    while n < max_tokens:
        sizes.append(n)
        if n >= 8 * step:
            step *= 2
        n += step
    return sizes + [max_tokens]


AUTO_PREFILL_TOKENS = 8192  # the largest prefill pass the auto value covers: start-up and graph memory grow with it


def piecewise_tokens(config: Any) -> int:
    """The largest extend pass an engine with `config` replays as pieces (0: none): the flag, whose auto value
    is the mixed budget (mixed steps on) and, on one GPU, at least the prefill budget up to
    `AUTO_PREFILL_TOKENS` (an eager prefill pass of a small model, even of 8192 tokens, launches its kernels for
    longer than a fast GPU takes to run them; not yet measured under tensor parallelism); never beside
    --compile, which owns the forward."""
    tokens = config.piecewise_cuda_graph_max_tokens
    if tokens < 0:
        tokens = config.max_mixed_tokens if config.enable_mixed_chunk else 0
        if config.tp_size == 1:
            tokens = max(tokens, min(config.max_prefill_tokens, AUTO_PREFILL_TOKENS))
    return 0 if config.compile else tokens


class _Borrowed:
    """A device memory range in the CUDA array interface, which `torch.as_tensor` views without owning it."""

    def __init__(self, ptr: int, nbytes: int) -> None:
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (ptr, False), "version": 2}


def borrow(t: torch.Tensor) -> torch.Tensor:
    """A tensor of `t`'s shape, strides and dtype over `t`'s memory that does not keep that memory allocated
    (valid while nothing else is written there: see the module doc for why that holds for the pieces)."""
    if t.numel() == 0:
        return t.new_empty(t.shape)
    span = (sum((n - 1) * st for n, st in zip(t.shape, t.stride())) + 1) * t.element_size()
    raw = torch.as_tensor(_Borrowed(t.data_ptr(), span), device=t.device)
    return raw.view(t.dtype).as_strided(t.shape, t.stride())


class _Cut:
    """Stands in for the attention backend while the model's forward is captured (or warmed up): ends the
    current graph, records which layer attends here and (captured) borrowed views of its q/k/v, begins the
    next graph and returns the static attention output as the call's result."""

    def __init__(self, runner: "PiecewiseGraphRunner", tokens: int, graphs: Optional[list]) -> None:
        self.runner, self.tokens, self.graphs = runner, tokens, graphs
        self.layers: list[int] = []
        self.inputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def begin(self) -> None:
        if self.graphs is not None:
            graph = torch.cuda.CUDAGraph()
            graph.capture_begin(pool=self.runner.pool)
            self.graphs.append(graph)

    def fuses_rope(self, batch: ForwardBatch) -> bool:
        return False  # extend passes: the model applies its rotary before attention

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: Optional[torch.Tensor], layer: int, batch: ForwardBatch
                ) -> torch.Tensor:
        r, n = self.runner, self.tokens
        if r.out is None:  # first call of the warm-up of the largest size: the output buffer takes its shape
            width = v.shape[-1] if v is not None else r.model.attention_params()["value_dim"]
            r.out = torch.zeros((r.max_tokens, q.shape[1] * width), dtype=q.dtype, device=q.device)
        if self.graphs is not None:
            self.inputs.append((borrow(q), borrow(k), None if v is None else borrow(v)))
            self.graphs[-1].capture_end()
        self.layers.append(layer)
        self.begin()
        return r.out[:n]


class PiecewiseGraphRunner:
    """Captures `model` extend passes of up to `max_tokens` tokens at start-up (the LM head stays eager: it runs
    on the sampled rows only); `run(batch, attn)` returns the final hidden states of the batch's tokens."""

    def __init__(self, model: torch.nn.Module, device: torch.device, max_tokens: int) -> None:
        self.model, self.device, self.max_tokens = model, device, max_tokens
        self.ids = torch.zeros(max_tokens, dtype=torch.int64, device=device)
        self.positions = torch.zeros(max_tokens, dtype=torch.int64, device=device)
        self.out: Optional[torch.Tensor] = None  # attention's output, shared by every layer and size
        self.pool = torch.cuda.graph_pool_handle()
        self.sizes = token_ladder(max_tokens)
        # size -> (pieces, layers, each layer's borrowed q/k/v, hidden)
        self.graphs: dict[int, tuple[list, list[int], list[tuple], torch.Tensor]] = {}
        t0 = time.perf_counter()
        stream = torch.cuda.Stream(self.device)  # one capture stream: each stream costs cuBLAS a workspace
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            for n in reversed(self.sizes):  # largest first: smaller sizes reuse its memory pool
                self._capture(n, stream)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(device)
        pieces = sum(len(g[0]) for g in self.graphs.values())
        logger.info("captured %d extend passes as %d CUDA graph pieces (up to %d tokens) in %.1f s",
                    len(self.sizes), pieces, max_tokens, time.perf_counter() - t0)

    def _batch(self, n: int) -> ForwardBatch:
        none = torch.zeros(0, dtype=torch.int32, device=self.device)
        return ForwardBatch(mode="prefill", input_ids=self.ids[:n], positions=self.positions[:n], out_loc=none,
                            req_rows=none, prefix_lens=none, seq_lens=none, qo_indptr=none, extend_lens_cpu=[n],
                            prefix_lens_cpu=[0], seq_lens_cpu=[n], req_rows_cpu=[0])

    def _capture(self, n: int, stream: "torch.cuda.Stream") -> None:
        self.model(self._batch(n), _Cut(self, n, None))  # warm-up: kernels compile outside the capture
        stream.synchronize()
        graphs: list = []
        cut = _Cut(self, n, graphs)
        cut.begin()
        hidden = self.model(self._batch(n), cut)
        graphs[-1].capture_end()
        self.graphs[n] = (graphs, cut.layers, cut.inputs, hidden)
        for graph in graphs:
            upload(graph, stream)

    def can_run(self, batch: ForwardBatch) -> bool:
        """Any pass of up to `max_tokens` tokens: the pieces are token-wise, so a decode batch larger than the
        decode graphs runs here too."""
        return 0 < batch.input_ids.shape[0] <= self.max_tokens

    def run(self, batch: ForwardBatch, attn: AttentionBackend) -> torch.Tensor:
        """Hidden states `[T, hidden]` of the batch's tokens (valid until the next run)."""
        t = batch.input_ids.shape[0]
        n = next(s for s in self.sizes if s >= t)
        self.ids[:t].copy_(batch.input_ids, non_blocking=True)
        self.positions[:t].copy_(batch.positions, non_blocking=True)
        attn.prepare(batch)
        graphs, layers, inputs, hidden = self.graphs[n]
        graphs[0].replay()
        for layer, graph, (q, k, v) in zip(layers, graphs[1:], inputs):
            attn.forward_into(q[:t], k[:t], None if v is None else v[:t], layer, batch, self.out[:t])
            graph.replay()
        return hidden[:t]
