"""`DecodeStream`: a batch-1 decode step of a dense pre-norm decoder (Llama shape) as one persistent launch.

At batch 1 a decode step reads every weight once; launched op by op, each kernel boundary and each small
kernel between the linears leaves HBM idle. The CUDA kernel (`tierlm/jit/csrc/decode_stream.cuh`) keeps one
CTA per SM for the whole step: a producer warp streams the weights of op after op into shared memory with bulk
asynchronous copies, never waiting for activations, while the consumer warps compute each op once the ops
before it are done on every SM. This module builds its op table (one row of `OP_FIELDS` per op: the layers'
QKV, attention, O, gate/up and down, then the LM head), owns the fp32 activation buffers and launches it.

Numerics: activations and the residual stay in fp32 from the embedding to the logits; weights, norm weights
and the KV cache are bf16 (the new token's K/V are rounded to bf16 before use, as the cache holds them).
`benchmarks/decode_stream_reference.py` computes the same step in torch for the tests.

Measured, not served: on an H100 the step is slower than the engine's kernel per op (its weight stream alone is
faster; docs/benchmarks.md says where the rest goes), so the engine does not use it. `run`'s probes (weights only,
no waits, no attention, no dot products, per-op timestamps) are what a next attempt starts from.
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

OP_FIELDS = ("type", "n", "k", "rows", "segs", "in_mode", "epilogue", "stagger",
             "weight", "input", "norm_weight", "output", "embed", "token", "eps_bits", "tiles",
             "qkv", "k_cache", "v_cache", "req_to_token", "table_stride", "req_row", "seq_len", "out_loc",
             "cos", "sin", "partial", "head_count", "q_heads", "kv_heads", "splits", "scale_bits", "claim")
GEMV, ATTENTION = 0, 1
VECTOR, NORM, EMBED_NORM = 0, 1, 2
STORE, ADD, SILU_MUL = 0, 1, 2
STAGE_BYTES = 32768  # one ring stage (kStageBytes)
HEADER_BYTES = 5632  # kHeaderBytes: barriers, sums and partial sums before the ring
CONSUMER_WARPS = 8  # kConsumerWarps
HEAD_DIM = 128  # kHeadDim
MAX_SPLITS = 16  # kMaxSplits: splits of the context per KV head
WEIGHTS_ONLY, NO_WAITS, NO_ATTENTION, NO_DOTS = 1, 2, 4, 8  # launch flags (probes)
STAGES = 5  # ring stages: with the widest x (fp32) this fills an SM's shared memory
MAX_SHARED = 232448  # bytes of shared memory a Hopper block may opt in to


def float_bits(x: float) -> int:
    """The IEEE float32 bits of `x` as a signed int (how the table carries eps and the attention scale)."""
    return struct.unpack("<i", struct.pack("<f", float(x)))[0]


def tile_rows(n: int, k: int, segs: int = 1) -> int:
    """Output rows per tile: the most (8, 4, 2 or 1) whose `segs` weight blocks fit one stage and divide `n` (the
    consumer warps split a tile's rows, then `k` in whole 8-value vectors). Raises ValueError when none fits."""
    for rows in (8, 4, 2, 1):
        if rows * segs <= 8 and n % rows == 0 and rows * segs * k * 2 <= STAGE_BYTES and k % 64 == 0:
            return rows
    raise ValueError(f"a [{segs * n}, {k}] weight does not tile into {STAGE_BYTES}-byte stages of whole rows "
                     f"(k must be a multiple of 64 and at most {STAGE_BYTES // (2 * segs)})")


@dataclass(frozen=True)
class StreamLayer:
    """One decoder layer as the stream reads it (bf16, contiguous): norms `[H]`, `qkv` `[(Hq + 2 Hkv) D, H]`
    (q heads, then k, then v), `o` `[H, Hq D]`, `gate_up` `[2 I, H]` (gate rows, then up), `down` `[H, I]`, and
    the layer's KV cache `[slots, Hkv, D]`."""

    input_norm: torch.Tensor
    qkv: torch.Tensor
    o: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor


@dataclass(frozen=True)
class StreamInputs:
    """The step's device buffers, read at launch (so a captured graph replays with new values): the token id
    (int64), the request's row of `req_to_token` (int32), its length with the new token (int32; at most the
    rotary tables' rows), the new token's KV slot (int64), and the int32 table itself."""

    token: torch.Tensor
    req_row: torch.Tensor
    seq_len: torch.Tensor
    out_loc: torch.Tensor
    req_to_token: torch.Tensor


def jit_args(stages: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """`load_jit` / `build_jit` arguments of the kernel with a ring of `stages` stages."""
    from tierlm.jit.cpp_args import make_cpp_args

    args = make_cpp_args(stages)
    return ("decode_stream", *args), dict(cuda_files=["decode_stream.cuh"], cuda_wrappers=[
        ("decode_stream", f"tierlm_kernels::decode_stream::decode_stream_cuda<{args}>")])


@functools.lru_cache(maxsize=None)
def _module(stages: int) -> Any:
    from tierlm.jit.loader import load_jit

    args, kwargs = jit_args(stages)
    return load_jit(*args, **kwargs)


def _check(name: str, t: torch.Tensor, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> None:
    if tuple(t.shape) != tuple(shape) or t.dtype != dtype or t.device != device or not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous {dtype} tensor of shape {tuple(shape)} on {device}, got "
                         f"{t.dtype} {tuple(t.shape)} on {t.device}{'' if t.is_contiguous() else ' (strided)'}")


class DecodeStream:
    """A batch-1 decode step as one launch: `run()` returns fp32 logits `[1, V]` for `inputs.token` and stores the
    new token's K/V in every layer's cache. Buffers and the op table are built once; the launch reads only them
    and `inputs`, so it may be captured in a CUDA graph."""

    def __init__(self, embed: torch.Tensor, layers: Sequence[StreamLayer], final_norm: torch.Tensor,
                 lm_head: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inputs: StreamInputs, *,
                 q_heads: int, kv_heads: int, eps: float, scale: float, num_ctas: Optional[int] = None,
                 stages: int = STAGES) -> None:
        if not layers:
            raise ValueError("need at least one layer")
        dev = embed.device
        vocab, hidden = embed.shape
        inter = layers[0].down.shape[1]
        if q_heads % kv_heads or q_heads // kv_heads not in (1, 2, 4, 8):
            raise ValueError(f"{q_heads} q heads over {kv_heads} KV heads: the stream takes a whole group of 1, 2, 4 "
                             f"or 8 q heads per KV head")
        nqkv = (q_heads + 2 * kv_heads) * HEAD_DIM
        bf = torch.bfloat16
        _check("embed", embed, (vocab, hidden), bf, dev)
        _check("lm_head", lm_head, (lm_head.shape[0], hidden), bf, dev)
        _check("final_norm", final_norm, (hidden,), bf, dev)
        _check("cos", cos, (cos.shape[0], HEAD_DIM), torch.float32, dev)
        _check("sin", sin, tuple(cos.shape), torch.float32, dev)
        for i, ly in enumerate(layers):
            for name, t, shape in (("input_norm", ly.input_norm, (hidden,)), ("qkv", ly.qkv, (nqkv, hidden)),
                                   ("o", ly.o, (hidden, q_heads * HEAD_DIM)), ("post_norm", ly.post_norm, (hidden,)),
                                   ("gate_up", ly.gate_up, (2 * inter, hidden)), ("down", ly.down, (hidden, inter)),
                                   ("k_cache", ly.k_cache, (ly.k_cache.shape[0], kv_heads, HEAD_DIM)),
                                   ("v_cache", ly.v_cache, tuple(ly.k_cache.shape))):
                _check(f"layers[{i}].{name}", t, shape, bf, dev)
        for name, t, dtype in (("token", inputs.token, torch.int64), ("req_row", inputs.req_row, torch.int32),
                               ("seq_len", inputs.seq_len, torch.int32), ("out_loc", inputs.out_loc, torch.int64)):
            _check(f"inputs.{name}", t.reshape(-1)[:1], (1,), dtype, dev)
        _check("inputs.req_to_token", inputs.req_to_token, tuple(inputs.req_to_token.shape), torch.int32, dev)
        if dev.type != "cuda":
            raise ValueError(f"the decode stream runs on CUDA only, got tensors on {dev}")
        if torch.cuda.get_device_capability(dev) < (9, 0):
            raise ValueError(f"the decode stream needs a Hopper GPU or newer (bulk copies, 227 KB of shared memory "
                             f"per block); {torch.cuda.get_device_name(dev)} is sm_"
                             f"{''.join(map(str, torch.cuda.get_device_capability(dev)))}")
        self.num_ctas = int(num_ctas or torch.cuda.get_device_properties(dev).multi_processor_count)
        self.stages = int(stages)
        group = q_heads // kv_heads
        self.splits = max(1, min(MAX_SPLITS, self.num_ctas // kv_heads))
        f32 = dict(dtype=torch.float32, device=dev)
        self.resid = torch.zeros(hidden, **f32)
        self.qkv_out = torch.zeros(nqkv, **f32)
        self.attn_out = torch.zeros(q_heads * HEAD_DIM, **f32)
        self.act = torch.zeros(inter, **f32)
        self.logits = torch.zeros(1, lm_head.shape[0], **f32)
        self.partial = torch.zeros(kv_heads * self.splits * group * (HEAD_DIM + 2), **f32)
        self.max_k = max(hidden, inter, q_heads * HEAD_DIM, CONSUMER_WARPS * group * (HEAD_DIM + 2))
        smem = HEADER_BYTES + self.stages * STAGE_BYTES + 4 * self.max_k
        if smem > MAX_SHARED:
            raise ValueError(f"{self.stages} stages and an input of {self.max_k} values need {smem} bytes of shared "
                             f"memory per block (at most {MAX_SHARED}); use fewer stages")
        num_ops = 5 * len(layers) + 1
        # per op: CTAs done, tiles taken; then per (layer, KV head): the splits done (zeroed by every launch)
        self.counters = torch.zeros(2 * num_ops + len(layers) * kv_heads, dtype=torch.int32, device=dev)
        self._keep = (embed, list(layers), final_norm, lm_head, cos, sin, inputs)  # the table holds their addresses
        rows: list[dict[str, int]] = []
        common = dict(eps_bits=float_bits(eps))

        def gemv(weight: torch.Tensor, n: int, k: int, segs: int, in_mode: int, inp: torch.Tensor, out: torch.Tensor,
                 epilogue: int, norm: Optional[torch.Tensor] = None, **extra: int) -> None:
            r = tile_rows(n, k, segs)
            rows.append(dict(type=GEMV, n=n, k=k, rows=r, segs=segs, in_mode=in_mode, epilogue=epilogue,
                             weight=weight.data_ptr(), input=inp.data_ptr(), output=out.data_ptr(),
                             norm_weight=norm.data_ptr() if norm is not None else 0, tiles=n // r, **common, **extra))

        for i, ly in enumerate(layers):
            if i == 0:  # the token's embedding row, normed; each CTA also seeds its slice of the residual
                gemv(ly.qkv, nqkv, hidden, 1, EMBED_NORM, self.resid, self.qkv_out, STORE, ly.input_norm,
                     embed=embed.data_ptr(), token=inputs.token.data_ptr())
            else:
                gemv(ly.qkv, nqkv, hidden, 1, NORM, self.resid, self.qkv_out, STORE, ly.input_norm)
            rows.append(dict(type=ATTENTION, qkv=self.qkv_out.data_ptr(), k_cache=ly.k_cache.data_ptr(),
                             v_cache=ly.v_cache.data_ptr(), req_to_token=inputs.req_to_token.data_ptr(),
                             table_stride=inputs.req_to_token.stride(0), req_row=inputs.req_row.data_ptr(),
                             seq_len=inputs.seq_len.data_ptr(), out_loc=inputs.out_loc.data_ptr(),
                             cos=cos.data_ptr(), sin=sin.data_ptr(), partial=self.partial.data_ptr(),
                             head_count=self.counters[2 * num_ops + i * kv_heads:].data_ptr(), q_heads=q_heads,
                             kv_heads=kv_heads, splits=self.splits, scale_bits=float_bits(scale),
                             output=self.attn_out.data_ptr(), tiles=kv_heads * self.splits))
            gemv(ly.o, hidden, q_heads * HEAD_DIM, 1, VECTOR, self.attn_out, self.resid, ADD)
            gemv(ly.gate_up, inter, hidden, 2, NORM, self.resid, self.act, SILU_MUL, ly.post_norm)
            gemv(ly.down, hidden, inter, 1, VECTOR, self.act, self.resid, ADD)
        gemv(lm_head, lm_head.shape[0], hidden, 1, NORM, self.resid, self.logits, STORE, final_norm)
        stagger = 0
        # each op's tiles are taken from its counter (`claim`); `stagger` only turns the attention items' deal round
        # the CTAs from layer to layer
        for o, r in enumerate(rows):
            r["stagger"] = stagger
            stagger = (stagger + r["tiles"]) % self.num_ctas
            r["claim"] = self.counters[num_ops + o:].data_ptr()
        table = torch.tensor([[r.get(f, 0) for f in OP_FIELDS] for r in rows], dtype=torch.int64)
        self.ops = table.to(dev)
        self.op_names = [n for i in range(len(layers)) for n in ("qkv", "attention", "o", "gate_up", "down")]
        self.op_names.append("lm_head")
        self._no_trace = torch.zeros(0, dtype=torch.int64, device=dev)
        self.weight_bytes = sum(r["n"] * r["k"] * r["segs"] * 2 for r in rows if r["type"] == GEMV)

    def run(self, weights_only: bool = False, no_waits: bool = False, no_attention: bool = False,
            no_dots: bool = False, trace: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Launch the step on the current stream; returns the logits buffer (overwritten by the next run).
        Probes: `weights_only` streams the weights through the ring without computing anything; `no_waits`
        computes every op without waiting for the one before (wrong outputs: the consumers' own speed);
        `no_attention` skips the attention ops and `no_dots` the tiles' dot products (wrong outputs); `trace`,
        int64 `[ops, num_ctas, 4]`, receives each CTA's global-timer stamps (ns) per op: start, dependencies met,
        input loaded, done."""
        if trace is None:
            trace = self._no_trace
        elif tuple(trace.shape) != (self.ops.shape[0], self.num_ctas, 4) or trace.dtype != torch.int64:
            raise ValueError(f"trace must be int64 {(self.ops.shape[0], self.num_ctas, 4)}, got {trace.dtype} "
                             f"{tuple(trace.shape)}")
        flags = sum(f for f, on in ((WEIGHTS_ONLY, weights_only), (NO_WAITS, no_waits), (NO_ATTENTION, no_attention),
                                    (NO_DOTS, no_dots)) if on)
        _module(self.stages).decode_stream(self.ops, self.counters, self.num_ctas, self.max_k, flags, trace)
        return self.logits
