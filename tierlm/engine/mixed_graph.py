"""`MixedGraphRunner`: mixed steps (prefill chunks beside decodes) captured whole, attention included.

Piecewise graphs (piecewise_graph.py) still launch every layer's attention from the host, so a mixed pass costs
milliseconds of host time whatever its size, and small mixed passes (the ones that cost their decodes little on
the device) end up bound by the host. Here a mixed pass of at most `budget` tokens is one graph replay.

Layout of a captured pass of `T` rows for `D` decode rows (one graph per `T` of `token_sizes(budget)`, 256, 512,
768, ... up to the budget, and per size `D < T` of `mixed_decode_sizes`): rows `[0, T - D)` are the prefill
chunks of up to `max_chunks` requests, then padding; rows `[T - D, T)` are the step's decodes, then padding. A
step takes the smallest `T` that holds it, so a step with little prefill does not pay for a full budget. The
extend kernel's grid is fixed by `T - D` and `max_chunks`: it numbers only the q-blocks that exist ("packed"
order), requests past the real ones have no tokens, and programs past the last block store nothing; the decode
kernel runs `D` rows, padded with the dummy request as decode graphs are.
Padding rows store their K/V in the scratch page and are never read by a real request nor sampled. The scheduler
leaves room for the decodes' padding (`mixed_graph_align`) and sizes a step to one of these row counts; a mixed
pass that still does not fit (more chunks, KV still loading layer by layer) and one that would pad by more than an
eighth of its rows (between the far-apart sizes past 2048) replay the piecewise graphs, whose ladder pads by less.

Prefill passes (no decodes; with mixed steps off, also one whose last chunk has a single token) get graphs of their
own, `D = 0`, for the piecewise ladder of token counts (`prefill_tokens`), so they pad no more than the pieces
would; an engine captures them with or without mixed steps (`--prefill-cuda-graph`): a small model's prefill pass
otherwise costs one attention launch per layer of host time, more than its device time.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import torch

from tierlm.attention.base import AttentionBackend, ForwardBatch
from tierlm.engine.graph_upload import upload
from tierlm.kernels.step_metadata import pad_mixed_inputs

logger = logging.getLogger(__name__)


def mixed_graph_on(config: Any) -> bool:
    """Whether an engine with `config` captures whole mixed passes (where its model and backend allow it)."""
    return bool(config.enable_mixed_chunk and config.mixed_cuda_graph and config.cuda_graph and not config.compile
                and config.device != "cpu" and torch.cuda.is_available())


def mixed_graph_align(config: Any) -> int:
    """`MixedBudget.decode_align`: `DECODE_STEP` when mixed passes are captured (the captured decode
    size that holds d decodes is at most d rounded up to it), else 1."""
    return DECODE_STEP if mixed_graph_on(config) else 1


DECODE_STEP = 16  # captured mixed passes hold 16, 32, ... decodes: the pass's rows are fixed, padding is cheap
# prompts (chunks) a captured pass holds: its extend launch numbers only the q-blocks that exist (the "packed"
# order), so the grid follows the pass's rows and this bounds only the search each program makes
MAX_CHUNKS = 64


def token_sizes(budget: int) -> list[int]:
    """Row counts of mixed passes (the captured ones, and the sizes the scheduler's backlog rule picks from):
    multiples of 256 up to 2048, then 3072, 4096, 6144, ... below `budget`, then `budget` itself. Steps of 256
    keep a pass of one prompt plus its decodes from running as twice its rows."""
    sizes, n = [], 256
    while n < budget:
        sizes.append(n)
        n += 256 if n < 2048 else n // 2 if n & (n - 1) == 0 else n // 3
    return sizes + [budget]


def mixed_decode_sizes(max_bs: int) -> list[int]:
    """Decode row counts of the captured mixed passes: multiples of `DECODE_STEP` up to `max_bs`, and `max_bs`."""
    sizes = list(range(DECODE_STEP, max_bs + 1, DECODE_STEP))
    return sizes if sizes and sizes[-1] == max_bs else sizes + [max_bs]


class MixedGraphRunner:
    """Captures `model` mixed passes of each row count of `token_sizes(budget)` for each decode size below it in
    `decode_sizes`, and prefill passes (no decodes) of each row count of `prefill_tokens`, at start-up
    (`capture=False` runs the same padded passes eagerly, for tests without CUDA); `run(batch, index)` returns
    the final hidden states of the batch's tokens `index` (`rows_of` maps them into the padded pass)."""

    def __init__(self, model: torch.nn.Module, attn: AttentionBackend, req_to_token: torch.Tensor, budget: int,
                 decode_sizes: list[int], max_chunks: int = MAX_CHUNKS, capture: bool = True,
                 prefill_tokens: Sequence[int] = ()) -> None:
        self.model, self.attn, self.budget, self.max_chunks = model, attn, budget, max_chunks
        self.sizes = [d for d in decode_sizes if d < budget]
        self.tokens = token_sizes(budget)
        self.prefill_tokens = sorted(prefill_tokens)
        rows = max([budget] + self.prefill_tokens)
        dev = req_to_token.device
        self.dummy_row = req_to_token.shape[0] - 1
        dummy_slot = int(req_to_token[self.dummy_row, 0])
        reqs = max_chunks + max(self.sizes, default=0)
        i64, i32 = dict(dtype=torch.int64, device=dev), dict(dtype=torch.int32, device=dev)
        self.ids, self.positions = torch.zeros(rows, **i64), torch.zeros(rows, **i64)
        self.out_loc = torch.full((rows,), dummy_slot, **i64)
        self.dummy_slot = dummy_slot
        self.rows = torch.full((reqs,), self.dummy_row, **i32)  # chunks' rows, then the decodes'
        self.prefix, self.seq = torch.zeros(reqs, **i32), torch.ones(reqs, **i32)
        self.qo = torch.zeros(max_chunks + 1, **i32)
        self.capture = capture
        self.graphs: dict[tuple[int, int], tuple[object, torch.Tensor]] = {}
        shapes = [(n, d) for n in self.tokens for d in self.sizes if d < n] + [(n, 0) for n in self.prefill_tokens]
        if not capture or not shapes:
            return
        t0 = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        with torch.inference_mode():
            for n, d in sorted(shapes, reverse=True):
                stream = torch.cuda.Stream(dev)  # largest first: smaller graphs reuse its memory pool
                stream.wait_stream(torch.cuda.current_stream(dev))
                with torch.cuda.stream(stream):
                    self._forward(n, d)  # warm-up: kernels compile outside the capture
                torch.cuda.current_stream(dev).wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    hidden = self._forward(n, d)
                self.graphs[n, d] = (graph, hidden)
                upload(graph)
        torch.cuda.synchronize(dev)
        logger.info("captured %d mixed-step CUDA graphs (%s tokens, up to %d decodes) and %d prefill-pass graphs "
                    "(up to %d tokens) in %.1f s", len(self.graphs) - len(self.prefill_tokens),
                    "/".join(map(str, self.tokens)) if self.sizes else "-", max(self.sizes, default=0),
                    len(self.prefill_tokens), max(self.prefill_tokens, default=0), time.perf_counter() - t0)

    def _batch(self, n: int, d: int) -> ForwardBatch:
        c, t = self.max_chunks, n - d
        return ForwardBatch(mode="prefill", input_ids=self.ids[:n], positions=self.positions[:n],
                            out_loc=self.out_loc[:n],
                            req_rows=self.rows[:c + d], prefix_lens=self.prefix[:c + d], seq_lens=self.seq[:c + d],
                            qo_indptr=self.qo, extend_lens_cpu=[t] + [0] * (c - 1) + [1] * d,
                            prefix_lens_cpu=[0] * (c + d), seq_lens_cpu=[t] + [0] * (c - 1) + [1] * d,
                            req_rows_cpu=[self.dummy_row] * (c + d))

    def _forward(self, n: int, d: int) -> torch.Tensor:
        batch = self._batch(n, d)
        self.attn.prepare_mixed_replay(batch, self.max_chunks, n - d)
        return self.model(batch, self.attn)

    def _chunks(self, batch: ForwardBatch) -> int:
        """Requests of `batch` that the pass's extend launch takes: those before its closing one-token requests
        (a mixed step's decodes), or all of them where no pass with decodes is captured (mixed steps off: a prefill
        pass whose last prompt, or last chunk, has one token is still a prefill pass)."""
        return batch.num_multi_token if self.sizes else batch.batch_size

    def _decode_size(self, batch: ForwardBatch) -> tuple[int, int] | None:
        """The captured (rows, decode size) of a mixed or prefill `batch`, or None if it fits no captured pass."""
        if batch.mode != "prefill" or self.attn.kv_loads is not None:  # mixed steps run as prefill passes
            return None
        chunks = self._chunks(batch)
        d = batch.batch_size - chunks
        if chunks > self.max_chunks:
            return None
        if d == 0:  # a prefill pass: the smallest prefill graph that holds it (the pieces' own ladder)
            t = batch.input_ids.shape[0]
            return next(((n, 0) for n in self.prefill_tokens if n >= t), None)
        if not self.sizes or d > self.sizes[-1]:
            return None
        size = next(s for s in self.sizes if s >= d)
        need = batch.input_ids.shape[0] - d + size
        n = next((n for n in self.tokens if need <= n and size < n), None)
        # past 2048 the captured row counts are far apart: a pass that would pad by more than an eighth of its
        # rows (and more than one step of 256) goes to the piecewise graphs, which pad by less
        return None if n is None or n - need > max(255, need // 8) else (n, size)

    def can_run(self, batch: ForwardBatch) -> bool:
        return self._decode_size(batch) is not None

    def run(self, batch: ForwardBatch, index: torch.Tensor) -> torch.Tensor:
        """Hidden states of the batch's tokens `index` (the rows to sample), from one padded pass."""
        shape = self._decode_size(batch)
        assert shape is not None, "can_run(batch) first"
        n, size = shape
        e = self._chunks(batch)
        d = batch.batch_size - e
        t = batch.input_ids.shape[0] - d
        base = n - size
        pad_mixed_inputs((batch.input_ids, batch.positions, batch.out_loc, batch.req_rows, batch.prefix_lens,
                          batch.seq_lens, batch.qo_indptr),
                         (self.ids, self.positions, self.out_loc, self.rows, self.prefix, self.seq, self.qo),
                         t, d, e, base, n, self.max_chunks, size, self.dummy_row, self.dummy_slot)
        if not self.capture:
            with torch.inference_mode():
                hidden = self._forward(n, size)
        else:
            graph, hidden = self.graphs[n, size]
            graph.replay()
        # a prefill pass's tokens keep their rows (no decodes moved to the end)
        return hidden[index if size == 0 else _padded_rows(index, t, base)]

    def rows_of(self, index: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """Rows of the padded pass that hold the batch's token `index` (the decodes moved to the end)."""
        shape = self._decode_size(batch)
        assert shape is not None
        t = batch.input_ids.shape[0] - (batch.batch_size - self._chunks(batch))
        return _padded_rows(index, t, shape[0] - shape[1])


def _padded_rows(index: torch.Tensor, chunk_rows: int, decode_base: int) -> torch.Tensor:
    """Token `index` of a batch whose first `chunk_rows` tokens are prefill chunks -> its row in the padded pass,
    whose decodes start at `decode_base`."""
    return torch.where(index < chunk_rows, index, index + (decode_base - chunk_rows))
