"""DeepSeek-V2 and DeepSeek-V3: multi-head latent attention (MLA) and mixture-of-experts layers.

MLA caches one latent vector per token and layer — the RMS-normalized compressed KV (`kv_lora_rank`) then
the roped key part shared by all heads (`qk_rope_head_dim`) — instead of per-head K and V. The model hands
the backend its queries (rope part rotated), the new latents and, once, every layer's `kv_b_proj`
(`attention_params()["up_proj"]`); the backend runs each request in the absorbed form (queries mapped into
latent space through `W_UK`, one shared "KV head" per token, output mapped back through `W_UV`) or, for long
extends, up-projects the latents and attends per head, and returns the heads' values (`attention_kind =
"mla"`; see `tierlm.attention.mla_up_proj`).

Parameter names follow the Hugging Face checkpoints; gate/up projections of the dense MLP and of the shared
experts are fused (`gate_up_proj`), the routed experts stacked (`experts_gate_up`, `experts_down`).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping, Optional

import torch
from torch import nn

from tierlm.attention.base import AttentionBackend, ForwardBatch
from tierlm.attention.mla_up_proj import LatentUpProj
from tierlm.kvcache.layout import KVLayout
from tierlm.layers.decoupled_rotary import DecoupledRotary
from tierlm.layers.moe import StackedExperts
from tierlm.layers.block import PreNormBlock
from tierlm.layers.norm import RMSNorm
from tierlm.models.config import ModelConfig
from tierlm.models.deepseek_config import DeepseekConfig
from tierlm.models.deepseek_moe import DeepseekMoE, GatedMLP

# checkpoint projection name -> (fused parameter name, shard id): gate/up of the dense MLP and the shared
# experts, and the routed experts' per-expert tensors into the stacked parameters
STACKED = MappingProxyType({"gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
                            **StackedExperts.CHECKPOINT_MAPPING})
LORA_NORM_EPS = 1e-6  # the q/kv low-rank norms use the default epsilon, not rms_norm_eps (as the reference)


class MLAttention(nn.Module):
    """Latent attention of one layer: low-rank (or plain) query, compressed KV, decoupled rope; the key/value
    up-projection (`kv_b_proj`) is applied by the backend, in the form it picks."""

    def __init__(self, cfg: DeepseekConfig, layer: int) -> None:
        super().__init__()
        self.cfg, self.layer = cfg, layer
        hidden, heads, bias = cfg.model.hidden_size, cfg.model.num_heads, cfg.attention_bias
        self.num_heads = heads
        if cfg.q_lora_rank is None:
            self.q_proj = nn.Linear(hidden, heads * cfg.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(hidden, cfg.q_lora_rank, bias=bias)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, LORA_NORM_EPS)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, heads * cfg.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(hidden, cfg.latent_dim, bias=bias)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, LORA_NORM_EPS)
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, heads * (cfg.qk_nope_head_dim + cfg.v_head_dim), bias=False)
        self.o_proj = nn.Linear(heads * cfg.v_head_dim, hidden, bias=bias)

    def forward(self, x: torch.Tensor, batch: ForwardBatch, rotary: DecoupledRotary,
                attn: AttentionBackend) -> torch.Tensor:
        cfg, T, H = self.cfg, x.shape[0], self.num_heads
        q = self.q_proj(x) if cfg.q_lora_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(T, H, cfg.qk_head_dim)
        q_pe = q[..., cfg.qk_nope_head_dim:]
        kv, k_pe = self.kv_a_proj_with_mqa(x).split([cfg.kv_lora_rank, cfg.qk_rope_head_dim], dim=-1)
        _, k_pe = rotary(batch.positions, q_pe, k_pe, q_out=q_pe)  # q's rope part rotated in place
        latent = torch.cat((self.kv_a_layernorm(kv), k_pe), dim=-1)  # [T, latent_dim]
        return self.o_proj(attn.forward(q, latent, None, self.layer, batch))


class DecoderLayer(PreNormBlock):
    """Pre-norm block: latent attention, then a dense MLP or the MoE; residual adds fused into the norms."""

    def __init__(self, cfg: DeepseekConfig, layer: int) -> None:
        super().__init__()
        mc = cfg.model
        self.self_attn = MLAttention(cfg, layer)
        self.mlp = (DeepseekMoE(cfg, mc.hidden_size) if cfg.is_moe_layer(layer)
                    else GatedMLP(mc.hidden_size, mc.intermediate_size))
        self.input_layernorm = RMSNorm(mc.hidden_size, mc.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(mc.hidden_size, mc.rms_norm_eps)


class Backbone(nn.Module):
    """Embedding, decoder layers and final norm (the `model.` prefix of HF checkpoints)."""

    def __init__(self, cfg: DeepseekConfig) -> None:
        super().__init__()
        mc = cfg.model
        self.embed_tokens = nn.Embedding(mc.vocab_size, mc.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(mc.num_layers))
        self.norm = RMSNorm(mc.hidden_size, mc.rms_norm_eps)


class DeepseekForCausalLM(nn.Module):
    """DeepSeek-V2/V3 (`DeepseekV2ForCausalLM`, `DeepseekV3ForCausalLM`): `forward(batch, attn)` returns the
    final hidden states of all new tokens. The KV cache holds one latent per token and layer."""

    attention_kind = "mla"
    # decode reads nothing on the host: device-side routing, the fused MoE kernel, Triton MLA decode
    cuda_graph_safe = True
    piecewise_graph_safe = True  # token-wise between attention calls on CUDA (`tierlm.engine.piecewise_graph`)

    def __init__(self, cfg: ModelConfig, max_positions: int) -> None:
        super().__init__()
        self.config = cfg
        self.mla = DeepseekConfig.from_model_config(cfg)
        self.model = Backbone(self.mla)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.rotary = DecoupledRotary(self.mla.qk_rope_head_dim, max_positions, cfg.rope_theta, cfg.rope_scaling,
                                      self.mla.rope_style, cfg.max_position_embeddings)

    def forward(self, batch: ForwardBatch, attn: AttentionBackend) -> torch.Tensor:
        x = self.model.embed_tokens(batch.input_ids)
        residual: Optional[torch.Tensor] = None
        for layer in self.model.layers:
            x, residual = layer(x, residual, batch, self.rotary, attn)
        x, _ = self.model.norm(x, residual)
        return x

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits in the model's dtype: the sampler widens them only where it computes with them (a greedy
        argmax picks the same token either way), so a large batch pays no float32 copy of its logits."""
        return self.lm_head(hidden)

    def attention_params(self) -> dict[str, Any]:
        """How the MLA backend is built: heads, the latent width (absorbed queries and keys), the value head
        width of its output, the softmax scale of the full q·k head dim (with YaRN's mscale correction) and
        every layer's key/value up-projection."""
        mla = self.mla
        up_proj = LatentUpProj([layer.self_attn.kv_b_proj for layer in self.model.layers], self.config.num_heads,
                               mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim, mla.kv_lora_rank)
        return dict(num_heads=self.config.num_heads, head_dim=mla.latent_dim, value_dim=mla.v_head_dim,
                    scale=mla.softmax_scale, up_proj=up_proj)

    @staticmethod
    def weight_mapping() -> Mapping[str, tuple[str, object]]:
        """Checkpoint projection name -> (fused parameter, shard id) for the loader."""
        return STACKED

    @staticmethod
    def kv_layout(cfg: ModelConfig, dtype: torch.dtype) -> KVLayout:
        """MLA: one latent of `kv_lora_rank + qk_rope_head_dim` per token and layer."""
        return KVLayout.latent(cfg.num_layers, DeepseekConfig.from_model_config(cfg).latent_dim, dtype)
