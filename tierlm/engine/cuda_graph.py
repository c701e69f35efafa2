"""`DecodeGraphRunner`: decode passes captured as CUDA graphs for a ladder of batch sizes, then replayed.

A decode step of a small model is dozens of short kernels per layer; launching them one by one costs more
host time than the device needs. Each captured graph reads only static buffers (request rows, positions,
sequence and prefix lengths, input ids, KV slots), so a step is: `stage` its values in one launch (the step's
new request-table entries, then the rows, positions and lengths, padded with the dummy request, row `max_reqs`,
position 0, length 1, which reads and writes only the scratch page, and each row's input id and slot read from
the request tables), then `replay`. Where the attention backend has other decode launches than its usual one
(`decode_variants`), they are captured too, at every size of the ladder that has them: capturing them at fewer sizes
padded the steps that take them further, which cost more than the start-up time of the graphs saved
(docs/benchmarks.md, 2026-12-06). A step takes the launch `decode_variant` picks from its lengths on the host,
padded to the next size captured with it. (`capture=False` runs the same padded passes eagerly, for
tests without CUDA.)
"""
from __future__ import annotations

import logging
import time

import torch

from tierlm.attention.base import ForwardBatch
from tierlm.engine.graph_upload import upload

logger = logging.getLogger(__name__)


def batch_size_ladder(max_bs: int) -> list[int]:
    """1, 2, 4, 8, then every 8 up to `max_bs` (padding waste stays under 8 rows)."""
    sizes = [b for b in (1, 2, 4) if b < max_bs] + list(range(8, max_bs + 1, 8))
    if not sizes or sizes[-1] != max_bs:
        sizes.append(max_bs)
    return sorted(set(sizes))


class DecodeGraphRunner:
    """Captures `model` decode forward passes (with the LM head) once at start-up; `replay` serves a batch."""

    def __init__(self, model, attn, req_to_token: torch.Tensor, token_ids: torch.Tensor, max_bs: int,
                 capture: bool = True) -> None:
        self.model, self.attn = model, attn
        self.req_to_token, self.token_ids = req_to_token, token_ids
        self.dummy_row = req_to_token.shape[0] - 1
        self.max_bs = max_bs
        self.capture = capture
        dev = req_to_token.device
        self.rows = torch.full((max_bs,), self.dummy_row, dtype=torch.int32, device=dev)
        self.positions = torch.zeros(max_bs, dtype=torch.int64, device=dev)
        self.seq_lens = torch.ones(max_bs, dtype=torch.int32, device=dev)
        self.prefix = torch.zeros(max_bs, dtype=torch.int32, device=dev)
        self.ids = torch.zeros(max_bs, dtype=torch.int64, device=dev)
        self.out_loc = torch.full((max_bs,), int(req_to_token[self.dummy_row, 0]), dtype=torch.int64, device=dev)
        self.indptr = torch.arange(max_bs + 1, dtype=torch.int32, device=dev)
        attn.init_graph_buffers(max_bs, req_to_token.shape[1])
        self.sizes = batch_size_ladder(max_bs)
        self.captures = self._captures()  # (size, the backend's decode variant), ascending by size
        # per variant, the captured size a step of n requests pads to (index n; None: no size holds it)
        self._pads = {v: [next((s for s, c in self.captures if c == v and s >= n), None) for n in range(max_bs + 1)]
                      for v in {c for _, c in self.captures}}
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        from tierlm.kernels.step_metadata import pad_decode_launch

        self._pad_launch = pad_decode_launch(dev)  # `stage`'s launch, every decode step
        if not capture:
            return
        t0 = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        with torch.inference_mode():
            for bs, variant in reversed(self.captures):  # largest first: smaller graphs reuse its memory pool
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    self._forward(bs, variant)  # warm-up: Triton compiles/autotunes outside the capture
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    out = self._forward(bs, variant)
                self.graphs[bs, variant] = (graph, out)
                upload(graph)
        torch.cuda.synchronize()
        logger.info("captured %d decode CUDA graphs (batch sizes 1..%d) in %.1f s", len(self.graphs), max_bs,
                    time.perf_counter() - t0)

    def _captures(self) -> list[tuple[int, int]]:
        """(size, launch) for every size of the ladder and every decode launch the backend has at that size."""
        return sorted((s, v) for s in self.sizes for v in self.attn.decode_variants(s))

    def variant_for(self, seq_lens: list[int]) -> int:
        """The decode variant a step with these lengths (on the host) replays: the backend's choice, or 0 where no
        size that holds the step was captured with it."""
        v = self.attn.decode_variant(seq_lens)
        return v if v and v in self._pads and self._pads[v][len(seq_lens)] is not None else 0

    def padded_size(self, n: int, variant: int) -> int:
        """The captured size a step of `n` requests taking `variant` pads to."""
        return self._pads[variant][n]

    def _forward(self, bs: int, variant: int) -> torch.Tensor:
        rows, pos, seq = self.rows[:bs], self.positions[:bs], self.seq_lens[:bs]
        batch = ForwardBatch(mode="decode", input_ids=self.ids[:bs], positions=pos, out_loc=self.out_loc[:bs],
                             req_rows=rows, prefix_lens=self.prefix[:bs], seq_lens=seq, qo_indptr=self.indptr[:bs + 1],
                             extend_lens_cpu=[1] * bs, prefix_lens_cpu=[], seq_lens_cpu=[], req_rows_cpu=[],
                             variant=variant)
        self.attn.prepare_for_replay(batch)
        return self.model.compute_logits(self.model(batch, self.attn))

    def fits(self, batch_size: int) -> bool:
        """Whether a decode batch of this size replays a graph (it then needs only rows, positions, lengths)."""
        return batch_size <= self.max_bs

    def can_run(self, batch: ForwardBatch) -> bool:
        return batch.mode == "decode" and self.fits(batch.batch_size)

    def stage(self, rows: torch.Tensor, positions: torch.Tensor, seq_lens: torch.Tensor,
              writes: tuple[torch.Tensor, torch.Tensor, torch.Tensor], variant: int = 0) -> None:
        """Load a decode batch into the static buffers of the graph that serves its size and `variant` (as
        `variant_for` chose it), in one launch: the step's new request-table entries (`writes`: rows, positions,
        slots) first, then the rows, positions and lengths copied and padded with the dummy request, and each row's
        input id and KV slot read from the tables."""
        from tierlm.kernels.step_metadata import pad_decode_inputs

        bs = self.padded_size(rows.numel(), variant)
        pad_decode_inputs((rows, positions, seq_lens),
                          (self.rows, self.positions, self.seq_lens, self.ids, self.out_loc, self.prefix),
                          self.req_to_token, self.token_ids, bs, self.dummy_row, writes, self._pad_launch)

    def replay(self, batch: ForwardBatch) -> torch.Tensor:
        """Logits `[B, vocab]` of a decode batch `stage`d before with `batch.variant` (valid until the next
        replay)."""
        n, variant = batch.batch_size, batch.variant
        bs = self.padded_size(n, variant)
        if not self.capture:
            with torch.inference_mode():
                return self._forward(bs, variant)[:n]
        graph, out = self.graphs[bs, variant]
        graph.replay()
        return out[:n]
