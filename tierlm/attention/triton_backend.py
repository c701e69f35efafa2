"""Triton attention backend: KV store, split-KV decode and prefix+causal extend kernels behind `AttentionBackend`.

Per-step metadata is built once in `prepare` (shared by every layer) with device ops only; no host sync.
Decode reads K/V straight through `req_to_token` (no CSR index array to build), so its metadata is just
the batch's `req_rows`/`seq_lens` plus float32 split scratch sized by the batch size alone.

CUDA graphs (decode): call `init_graph_buffers(max_bs, max_len)` once, then for capture and for every
replay call `prepare_for_replay(batch)` instead of `prepare`: the kernels read `req_rows`/`seq_lens` in place
(the graph runner's static buffers, which it refreshes and pads before every replay: rows beyond the real
batch are the dummy row with seq_len >= 1) and write static split scratch whose shape depends only on the
(padded) batch size, so a graph captured for batch size `bs` stays valid. `forward` allocates its output inside
the captured region (graph memory pool).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from tierlm.attention.base import AttentionBackend, ForwardBatch
from tierlm.attention.decode_scratch import DecodeMeta, DecodeScratch
from tierlm.kernels.balanced_splits import BalancedPlan, balanced_plan, plan_sizes
from tierlm.kernels.decode_attention import decode_attention
from tierlm.kernels.extend_attention import extend_attention
from tierlm.kernels.launch import cdiv
from tierlm.kernels.packed_tiles import packed_tiles
from tierlm.kernels.request_splits import choose_max_splits
from tierlm.kernels.rope_tile import QKRope, fusable
from tierlm.kernels.store_kv import store_kv
from tierlm.kvcache.pool import KVPool
from tierlm.utils.triton_mode import compiled_on_gpu


@dataclass(frozen=True)
class TritonAttentionConfig:
    """Kernel launch parameters. GPU defaults: best of the sweeps in benchmarks/bench_attention.py (see
    benchmarks/NOTES-attention.md); the interpreter gets tiny tiles so CPU tests stay fast."""

    decode_block_n: int = 128
    decode_min_chunk: int = 128  # fewest KV tokens worth a split of their own
    decode_waves: int = 4  # stage-1 programs per SM the split count aims for
    # GQA groups this large use tl.dot (padded to 16 rows), smaller a broadcast multiply. 1 = always dot:
    # on H200 the padded tl.dot read at 95% of copy bandwidth for group 2, the broadcast at 24%.
    decode_dot_min_group: int = 1
    # batches of at least this many requests run stage 1 longest request first (0: never). Off on the GPU: the
    # kernel alone gains on mixed lengths, the engine's decode steps do not (docs/benchmarks.md, 2026-12-04)
    decode_longest_first: int = 0
    # decode steps of at least this many requests apply the q/k norm and rotary inside decode attention, one pass
    # per layer fewer (0: never). Off on the GPU: the engine gained or lost with it by the decode launch the tuner
    # picked, which times the kernel without it (docs/benchmarks.md, 2026-12-04, late); on under the interpreter
    decode_fused_rope: int = 0
    # decode steps of at least this many requests whose longest request is at least `decode_skew` times their mean
    # length split the KV by tokens across the batch (`kernels.balanced_splits`), so one long request does not
    # hold the step (0: never); other steps keep the per-request split: on equal or mildly mixed lengths the
    # plan's own launches cost the engine more than its balance wins (docs/benchmarks.md, 2026-12-06). The graph
    # runner captures it at every size from this one (`engine.cuda_graph`). Under the interpreter from 3 requests
    # and any skew, so CPU engine tests run both it and, at 2, the longest-first order it replaces
    decode_balanced: int = 16
    # (smallest batch, longest / mean length), ascending: the skew from which a step of that many requests or more
    # takes the split by tokens. Few requests split each one into many slices, so a long one's slices hold the step
    # at milder skew than at 128+, where each request is one slice among many waves (docs/benchmarks.md,
    # 2026-12-06: the kernel swept by batch size)
    decode_skew: tuple[tuple[int, float], ...] = ((0, 2.5), (64, 3.0), (128, 4.0))
    decode_num_warps: int = 4
    decode_num_stages: int = 2
    # (smallest batch, KV tile, warps, stages), ascending: decode steps of at least that many requests use that
    # launch; steps below the first (or all, when empty) use the three fields above. The start-up tuner fills it
    decode_launches: tuple[tuple[int, int, int, int], ...] = ()
    extend_block_m: int = 64
    extend_block_n: int = 64
    extend_num_warps: int = 4
    extend_num_stages: int = 3

    @classmethod
    def for_device(cls, device: torch.device) -> "TritonAttentionConfig":
        if not compiled_on_gpu(device):
            return cls(decode_block_n=16, decode_min_chunk=16, extend_block_m=16, extend_block_n=16,
                       decode_num_stages=1, extend_num_stages=1, decode_longest_first=2,
                       decode_fused_rope=1, decode_balanced=3, decode_skew=((0, 1.0),))
        return cls()

    def decode_launch(self, batch_size: int) -> tuple[int, int, int]:
        """(KV tile, warps, stages) of a decode step of `batch_size` requests; a function of the size only, so a
        graph captured for a size replays the launch it captured."""
        launch = (self.decode_block_n, self.decode_num_warps, self.decode_num_stages)
        for min_batch, block_n, warps, stages in self.decode_launches:
            if batch_size >= min_batch:
                launch = (block_n, warps, stages)
        return launch

    def balanced_at(self, batch_size: int) -> bool:
        """Whether decode steps of `batch_size` requests may split the KV by tokens (`decode_balanced`)."""
        return 0 < self.decode_balanced <= batch_size

    def skew_threshold(self, batch_size: int) -> float:
        """The longest / mean length from which a decode step of `batch_size` requests splits the KV by tokens
        (infinite: never at this size)."""
        threshold = float("inf")
        for min_batch, ratio in self.decode_skew:
            if batch_size >= min_batch:
                threshold = ratio
        return threshold if self.balanced_at(batch_size) else float("inf")


@dataclass
class _ExtendMeta:
    """An extend pass: its first `num_extend` requests run the extend kernel; the one-token requests that
    end the batch (a mixed step's decodes) run the decode kernel (`decode`), which reads each KV byte once
    per GQA group and splits long sequences, where the extend kernel would give each a whole query tile."""

    qo_indptr: torch.Tensor  # [num_extend+1] int32: request b's new tokens are rows [b]:[b+1]
    max_extend: int  # host int: sizes the q-block grid dimension
    num_extend: int = 0
    decode: DecodeMeta | None = None
    # a captured pass numbers only the q-blocks that exist: its grid is fixed for any mix of its chunks
    order: str = "heavy_first"
    tiles: torch.Tensor | None = None  # the packed order's work table, written once per pass for every layer


class TritonBackend(AttentionBackend):
    """Attention through Triton kernels on CUDA (or the Triton interpreter on CPU, for tests).

    Why: the torch backend loops over requests and materialises each request's K/V; these kernels read
    K/V in place through `req_to_token`, split long sequences across SMs in decode, and read each KV byte
    once per GQA group.
    """

    def __init__(self, pool: KVPool, req_to_token: torch.Tensor, num_heads: int, head_dim: int, scale: float,
                 config: TritonAttentionConfig | None = None) -> None:
        super().__init__(pool, req_to_token, num_heads, head_dim, scale)
        self.num_kv_heads = pool.layers[0]["k"].shape[1]
        self.device = req_to_token.device
        self.config = config or TritonAttentionConfig.for_device(self.device)
        self.num_sms = (torch.cuda.get_device_properties(self.device).multi_processor_count
                        if self.device.type == "cuda" else 4)
        self._meta: DecodeMeta | _ExtendMeta | None = None
        # decided once: asked by every layer of every forward (0: never)
        self._fused_rope_min = self.config.decode_fused_rope if fusable(head_dim) else 0
        # work items a balanced plan may add beyond what the per-request rule launches: `decode_waves` per SM
        self._balanced_extra = cdiv(self.config.decode_waves * self.num_sms, self.num_kv_heads)
        self._scratch = DecodeScratch(num_heads, head_dim, self.max_splits, self.device,
                                      self.config.decode_longest_first, self._plan, self._plan_rows)

    def supports_cuda_graph(self) -> bool:
        return True

    def fuses_rope(self, batch: ForwardBatch) -> bool:
        # a function of the mode and size only, so a graph captured for a batch size replays what it captured
        return 0 < self._fused_rope_min <= batch.batch_size and batch.mode == "decode"

    def max_splits(self, batch_size: int) -> int:
        """KV splits per request for a decode batch of this size (a function of the size only)."""
        return choose_max_splits(batch_size, self.num_kv_heads, self.num_sms, waves=self.config.decode_waves)

    def _plan_items(self, batch_size: int) -> tuple[int, int]:
        """(goal, extra) of a balanced plan: the items the per-request rule launches for equal lengths, and the room
        beyond them for long requests' slices."""
        return batch_size * self.max_splits(batch_size), self._balanced_extra

    def _plan(self, seq_lens: torch.Tensor) -> Optional[BalancedPlan]:
        """A decode step's balanced plan, or None for a size that keeps the per-request split."""
        bs = seq_lens.shape[0]
        if not self.config.balanced_at(bs):
            return None
        chunk = self.config.decode_min_chunk
        return balanced_plan(seq_lens, *self._plan_items(bs), chunk, chunk)

    def _plan_rows(self, batch_size: int) -> int:
        return plan_sizes(batch_size, *self._plan_items(batch_size))[0] if self.config.balanced_at(batch_size) else 0

    def decode_variants(self, batch_size: int) -> tuple[int, ...]:
        """0: the KV split per request; 1: split by tokens across the batch (sizes from `decode_balanced`)."""
        return (0, 1) if self.config.balanced_at(batch_size) else (0,)

    def decode_variant(self, seq_lens: list[int]) -> int:
        n = len(seq_lens)  # a skewed step: its longest request at least the size's threshold times the mean length
        threshold = self.config.skew_threshold(n)  # infinite below `decode_balanced`: no pass over the lengths
        return int(threshold != float("inf") and max(seq_lens) * n >= threshold * sum(seq_lens))

    def prepare(self, batch: ForwardBatch) -> None:
        if batch.mode == "decode":
            balanced = self.decode_variant(batch.seq_lens_cpu) == 1
            self._meta = self._scratch.for_batch(batch.req_rows, batch.seq_lens, balanced)
            return
        e = batch.num_multi_token
        decode = self._scratch.for_batch(batch.req_rows[e:], batch.seq_lens[e:]) if e < batch.batch_size else None
        self._meta = _ExtendMeta(batch.qo_indptr[:e + 1], max(batch.extend_lens_cpu[:e], default=0), e, decode)

    def init_graph_buffers(self, max_bs: int, max_len: int) -> None:
        """Preallocate decode metadata for batch sizes up to `max_bs` (call once, before any capture).

        `max_len` (the request table's width) needs no buffer here: the kernels index `req_to_token` directly.
        """
        assert max_len <= self.req_to_token.shape[1]
        self._scratch.init_graph(max_bs)

    def prepare_for_replay(self, batch: ForwardBatch) -> None:
        """Point the decode metadata at `batch`'s static rows and lengths (already padded to the graph's size)."""
        assert batch.mode == "decode", "graphs are decode-only"
        self._meta = self._scratch.for_replay(batch.req_rows, batch.seq_lens, batch.variant == 1)

    def supports_mixed_graph(self) -> bool:
        return True

    def prepare_mixed_replay(self, batch: ForwardBatch, num_chunks: int, chunk_rows: int) -> None:
        c = num_chunks
        decode = self._scratch.for_replay(batch.req_rows[c:], batch.seq_lens[c:]) if batch.batch_size > c else None
        qo = batch.qo_indptr[:c + 1]
        tiles = packed_tiles(qo, chunk_rows, chunk_rows, self.config.extend_block_m)
        self._meta = _ExtendMeta(qo, chunk_rows, c, decode, order="packed", tiles=tiles)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int,
                batch: ForwardBatch, rope: Optional[QKRope] = None) -> torch.Tensor:
        out = torch.empty(q.shape[0], self.num_heads, self.head_dim, dtype=q.dtype, device=q.device)
        return self._attend(q, k, v, layer, batch, rope, out)

    def forward_into(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, batch: ForwardBatch,
                     out: torch.Tensor) -> None:
        self._attend(q, k, v, layer, batch, None, out.view(q.shape[0], self.num_heads, self.head_dim))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, batch: ForwardBatch,
                rope: Optional[QKRope], out: torch.Tensor) -> torch.Tensor:
        """Attention of the pass's q into `out` `[T, H, D]`; returns it as `[T, H * D]`."""
        self.wait_kv(layer)
        bufs = self.pool.layers[layer]
        k_buf, v_buf = bufs["k"], bufs["v"]
        meta, cfg = self._meta, self.config
        if batch.mode == "decode":  # the decode kernel stores the step's K/V itself (one launch fewer)
            assert isinstance(meta, DecodeMeta), "prepare(batch) must run before forward"
            self._decode(q, k_buf, v_buf, out, meta, (k, v, batch.out_loc), rope)
            return out.view(q.shape[0], self.num_heads * self.head_dim)
        assert rope is None, "only decode steps take q/k before their rotary (fuses_rope)"
        rounded = store_kv(k, v, k_buf, v_buf, batch.out_loc, round_back=True)
        assert isinstance(meta, _ExtendMeta), "prepare(batch) must run before forward"
        t = q.shape[0] - (meta.decode.req_rows.shape[0] if meta.decode is not None else 0)
        if meta.num_extend:
            e = meta.num_extend
            extend_attention(q[:t], k[:t], v[:t], out[:t], k_buf, v_buf, self.req_to_token, batch.req_rows[:e],
                             batch.prefix_lens[:e], meta.qo_indptr, meta.max_extend, self.scale,
                             block_m=cfg.extend_block_m, block_n=cfg.extend_block_n,
                             num_warps=cfg.extend_num_warps, num_stages=cfg.extend_num_stages,
                             new_rounded=rounded, order=meta.order, tiles=meta.tiles)
        if meta.decode is not None:  # their new K/V is in the pool already (store_kv above)
            self._decode(q[t:], k_buf, v_buf, out[t:], meta.decode)
        return out.view(q.shape[0], self.num_heads * self.head_dim)

    def _decode(self, q: torch.Tensor, k_buf: torch.Tensor, v_buf: torch.Tensor, out: torch.Tensor,
                meta: DecodeMeta, new_kv: Optional[tuple] = None, rope: Optional[QKRope] = None) -> None:
        cfg = self.config
        block_n, warps, stages = cfg.decode_launch(q.shape[0])
        decode_attention(q, k_buf, v_buf, self.req_to_token, meta.req_rows, meta.seq_lens, out, meta.mid_o,
                         meta.mid_lse, self.scale, min_chunk=cfg.decode_min_chunk, block_n=block_n,
                         dot_min_group=cfg.decode_dot_min_group, num_warps=warps, num_stages=stages,
                         order=meta.order, new_kv=new_kv, rope=rope, balanced=meta.plan)
