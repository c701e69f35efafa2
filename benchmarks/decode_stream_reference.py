"""The batch-1 decode step `tierlm.kernels.decode_stream.DecodeStream` computes, in torch (fp32 activations).

Also builds random Llama-shaped weights for it (`random_model`), so that the GPU test and the benchmark share
one recipe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from tierlm.kernels.decode_stream import HEAD_DIM, StreamInputs, StreamLayer
from tierlm.layers.rotary import RotaryEmbedding


@dataclass(frozen=True)
class Shape:
    """A dense decoder's sizes."""

    hidden: int
    inter: int
    q_heads: int
    kv_heads: int
    layers: int
    vocab: int


SHAPES = {"llama-3.1-8b": Shape(4096, 14336, 32, 8, 32, 128256),
          "llama-3.2-1b": Shape(2048, 8192, 32, 8, 16, 128256),
          "small": Shape(512, 1024, 8, 2, 2, 1000)}


@dataclass(frozen=True)
class RandomModel:
    """Random bf16 weights (scaled so activations stay finite), a KV cache holding `context` tokens in shuffled
    slots, and the step inputs for the next token."""

    embed: torch.Tensor
    layers: list[StreamLayer]
    final_norm: torch.Tensor
    lm_head: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    inputs: StreamInputs
    shape: Shape


def random_model(shape: Shape, context: int, device: torch.device, seed: int = 0, max_len: int = 4096,
                 slots: int = 8192) -> RandomModel:
    g = torch.Generator(device=device).manual_seed(seed)
    bf = torch.bfloat16

    def w(n: int, k: int) -> torch.Tensor:
        return (torch.randn(n, k, generator=g, device=device) * k ** -0.5).to(bf)

    def norm(n: int) -> torch.Tensor:
        return (1 + 0.1 * torch.randn(n, generator=g, device=device)).to(bf)

    h, d = shape.hidden, HEAD_DIM
    nqkv = (shape.q_heads + 2 * shape.kv_heads) * d
    layers = []
    for _ in range(shape.layers):
        kc = torch.randn(slots, shape.kv_heads, d, generator=g, device=device).to(bf)
        layers.append(StreamLayer(norm(h), w(nqkv, h), w(h, shape.q_heads * d), norm(h), w(2 * shape.inter, h),
                                  w(h, shape.inter), kc, torch.randn(kc.shape, generator=g, device=device).to(bf)))
    rot = RotaryEmbedding(d, max_len, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    table = torch.zeros(2, max_len, dtype=torch.int32, device=device)
    perm = torch.randperm(slots - 1, generator=g, device=device)[:context + 1] + 1
    table[1, :context + 1] = perm.to(torch.int32)
    inputs = StreamInputs(token=torch.tensor([7], device=device), req_row=torch.tensor([1], dtype=torch.int32,
                                                                                        device=device),
                          seq_len=torch.tensor([context + 1], dtype=torch.int32, device=device),
                          out_loc=perm[context:context + 1].to(torch.int64), req_to_token=table)
    embed = (torch.randn(shape.vocab, h, generator=g, device=device)).to(bf)
    return RandomModel(embed, layers, norm(h), w(shape.vocab, h), rot.cos.to(device), rot.sin.to(device), inputs,
                       shape)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean() + eps) * weight.float()


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


def reference_step(m: RandomModel, layers: Sequence[StreamLayer], eps: float = 1e-5) -> torch.Tensor:
    """fp32 logits `[1, V]` for `m.inputs`; stores the new token's K/V (bf16) in `layers`' caches, as the kernel."""
    s, d = m.shape, HEAD_DIM
    inp = m.inputs
    length = int(inp.seq_len[0])
    pos = length - 1
    slots = inp.req_to_token[int(inp.req_row[0]), :length].long()
    out_loc = int(inp.out_loc[0])
    resid = m.embed[int(inp.token[0])].float()
    cos, sin = m.cos[pos], m.sin[pos]
    group = s.q_heads // s.kv_heads
    for ly in layers:
        qkv = ly.qkv.float() @ _rms(resid, ly.input_norm, eps)
        q = qkv[:s.q_heads * d].view(s.q_heads, d)
        k = qkv[s.q_heads * d:(s.q_heads + s.kv_heads) * d].view(s.kv_heads, d)
        v = qkv[(s.q_heads + s.kv_heads) * d:].view(s.kv_heads, d)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        ly.k_cache[out_loc] = k.to(torch.bfloat16)
        ly.v_cache[out_loc] = v.to(torch.bfloat16)
        keys = ly.k_cache[slots].float().repeat_interleave(group, 1)  # [L, Hq, D]
        vals = ly.v_cache[slots].float().repeat_interleave(group, 1)
        scores = torch.einsum("hd,lhd->hl", q, keys) * d ** -0.5
        attn = torch.einsum("hl,lhd->hd", scores.softmax(-1), vals).reshape(-1)
        resid = resid + ly.o.float() @ attn
        gu = ly.gate_up.float() @ _rms(resid, ly.post_norm, eps)
        gate, up = gu.chunk(2)
        resid = resid + ly.down.float() @ (torch.nn.functional.silu(gate) * up)
    return (m.lm_head.float() @ _rms(resid, m.final_norm, eps))[None]
