"""Decoder-only transformer covering Llama 2/3.x, Qwen2/2.5 (qkv bias) and Qwen3 (q/k RMSNorm).

Parameter names follow the Hugging Face checkpoints except that q/k/v and gate/up projections are
fused (`qkv_proj`, `gate_up_proj`); `STACKED` tells the loader how checkpoint tensors fill them.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Optional

import torch
from torch import nn

from tierlm.attention.base import AttentionBackend, ForwardBatch
from tierlm.kvcache.layout import KVLayout
from tierlm.layers.mlp import GatedMLP
from tierlm.layers.block import PreNormBlock
from tierlm.layers.norm import RMSNorm
from tierlm.layers.rotary import RotaryEmbedding
from tierlm.models.config import ModelConfig
from tierlm.parallel.group import TPGroup
from tierlm.parallel.linear import (ColumnParallelLinear, ParallelLMHead, RowParallelLinear,
                                    VocabParallelEmbedding)

# checkpoint projection name -> (fused parameter name, shard id)
STACKED = MappingProxyType({
    "q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v"),
    "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
})


class Attention(nn.Module):
    """Self-attention of one layer: fused QKV, optional q/k norm, rotary, backend attention, output proj.

    Under tensor parallelism each rank holds `num_heads / tp` query heads and its share of the KV heads
    (replicated when there are fewer KV heads than ranks); the output projection all-reduces."""

    def __init__(self, cfg: ModelConfig, layer: int, tp: TPGroup) -> None:
        super().__init__()
        self.layer = layer
        self.num_heads = tp.split(cfg.num_heads, "the number of attention heads")
        self.num_kv_heads, self.kv_index = tp.kv_heads(cfg.num_kv_heads)
        self.head_dim, self.rank = cfg.head_dim, tp.rank
        self.q_size = self.num_heads * cfg.head_dim
        self.kv_size = self.num_kv_heads * cfg.head_dim
        self.qkv_proj = ColumnParallelLinear(cfg.hidden_size, self.q_size + 2 * self.kv_size, cfg.qkv_bias, tp)
        self.o_proj = RowParallelLinear(self.q_size, cfg.hidden_size, False, tp)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None

    def shard_range(self, shard: str) -> tuple[int, int]:
        return {"q": (0, self.q_size), "k": (self.q_size, self.q_size + self.kv_size),
                "v": (self.q_size + self.kv_size, self.q_size + 2 * self.kv_size)}[shard]

    def tp_index(self, shard: str) -> int:
        """Which slice of the checkpoint's q, k or v rows this rank holds."""
        return self.rank if shard == "q" else self.kv_index

    def _qk_norm(self) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], float]:
        """The q/k norm weights (None without a q/k norm) and epsilon, as the fused kernels take them."""
        if self.q_norm is None:
            return None, None, 1e-6
        return self.q_norm.weight, self.k_norm.weight, self.q_norm.eps

    def forward(self, x: torch.Tensor, batch: ForwardBatch, rotary: RotaryEmbedding,
                attn: AttentionBackend) -> torch.Tensor:
        qkv = self.qkv_proj(x)
        q, k, v = (t.reshape(-1, n, self.head_dim) for t, n in zip(
            qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1),
            (self.num_heads, self.num_kv_heads, self.num_kv_heads)))  # views of qkv
        if attn.fuses_rope(batch):  # the attention kernel applies the q/k norm and rotary as it loads them
            from tierlm.kernels.rope_tile import QKRope

            rope = QKRope(batch.positions, rotary.cos, rotary.sin, *self._qk_norm())
            return self.o_proj(attn.forward(q, k, v, self.layer, batch, rope=rope))
        if qkv.is_cuda and self.head_dim % 32 == 0:  # one fused Triton pass for q/k norm + rotary
            from tierlm.kernels.fused import qk_norm_rope

            q, k = qk_norm_rope(qkv, batch.positions, rotary.cos, rotary.sin, self.num_heads, self.num_kv_heads,
                                self.head_dim, *self._qk_norm())
            return self.o_proj(attn.forward(q, k, v, self.layer, batch))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rotary(batch.positions, q, k)
        return self.o_proj(attn.forward(q, k, v, self.layer, batch))


class MLP(GatedMLP):
    """SwiGLU feed-forward with fused gate/up projection, sized by the model config."""

    def __init__(self, cfg: ModelConfig, tp: TPGroup = TPGroup()) -> None:
        super().__init__(cfg.hidden_size, cfg.intermediate_size, tp)


class DecoderLayer(PreNormBlock):
    """Pre-norm transformer block; the residual add is fused into the norms."""

    def __init__(self, cfg: ModelConfig, layer: int, tp: TPGroup = TPGroup()) -> None:
        super().__init__()
        self.tp = tp
        self.self_attn = Attention(cfg, layer, tp)
        self.mlp = self.make_mlp(cfg, layer)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def make_mlp(self, cfg: ModelConfig, layer: int) -> nn.Module:
        """The feed-forward of `layer` (a subclass may build another kind, e.g. mixture of experts)."""
        return MLP(cfg, self.tp)


class Backbone(nn.Module):
    """Embedding, decoder layers and final norm (the `model.` prefix of HF checkpoints)."""

    def __init__(self, cfg: ModelConfig, layer_cls: type[nn.Module] = DecoderLayer, tp: TPGroup = TPGroup()) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, tp)
        self.layers = nn.ModuleList(layer_cls(cfg, i, tp) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class CausalLM(nn.Module):
    """The full model: `forward(batch, attn)` returns final hidden states of all new tokens."""

    layer_cls: type[nn.Module] = DecoderLayer  # a family whose blocks differ only inside swaps this
    cuda_graph_safe = True  # its decode forward has no host synchronisation: CUDA graphs may capture it
    piecewise_graph_safe = True  # token-wise between attention calls (`tierlm.engine.piecewise_graph`)
    tensor_parallel = True  # may be sharded over several ranks (`tp`)

    def __init__(self, cfg: ModelConfig, max_positions: int, tp: TPGroup = TPGroup()) -> None:
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg, self.layer_cls, tp)
        self.lm_head = ParallelLMHead(cfg.hidden_size, cfg.vocab_size, tp)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.rotary = RotaryEmbedding(cfg.head_dim, max_positions, cfg.rope_theta, cfg.rope_scaling,
                                      cfg.max_position_embeddings)

    def forward(self, batch: ForwardBatch, attn: AttentionBackend) -> torch.Tensor:
        x = self.model.embed_tokens(batch.input_ids)
        residual = None
        for layer in self.model.layers:
            x, residual = layer(x, residual, batch, self.rotary, attn)
        x, _ = self.model.norm(x, residual)
        return x

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits in the model's dtype: the sampler widens them only where it computes with them (a greedy
        argmax picks the same token either way), so a large batch pays no float32 copy of its logits."""
        return self.lm_head(hidden)

    @staticmethod
    def weight_mapping() -> Mapping[str, tuple[str, object]]:
        """Checkpoint projection name -> (fused parameter, shard id) for the loader."""
        return STACKED

    @staticmethod
    def kv_layout(cfg: ModelConfig, dtype: torch.dtype, tp: TPGroup = TPGroup()) -> KVLayout:
        """GQA: a K and a V of `[kv_heads, head_dim]` per token and layer (this rank's KV heads)."""
        return KVLayout.gqa(cfg.num_layers, tp.kv_heads(cfg.num_kv_heads)[0], cfg.head_dim, dtype)
