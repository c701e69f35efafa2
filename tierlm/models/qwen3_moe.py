"""Qwen3-MoE: Qwen3's decoder (GQA attention with q/k RMSNorm) whose feed-forward is a sparse mixture of
experts on the layers `decoder_sparse_step` selects (except `mlp_only_layers`, which keep a dense MLP)."""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from torch import nn

from tierlm.layers.moe import SparseMoE
from tierlm.models import llama
from tierlm.models.config import ModelConfig

WEIGHT_MAPPING = MappingProxyType({**llama.STACKED, **SparseMoE.CHECKPOINT_MAPPING})


def is_sparse(cfg: ModelConfig, layer: int) -> bool:
    """Whether `layer` has experts: every `decoder_sparse_step`-th layer, unless listed in `mlp_only_layers`."""
    return (layer not in cfg.mlp_only_layers and cfg.num_experts > 0
            and (layer + 1) % cfg.decoder_sparse_step == 0)


class DecoderLayer(llama.DecoderLayer):
    """Qwen3 block with a `SparseMoE` feed-forward on sparse layers and the dense SwiGLU elsewhere."""

    def make_mlp(self, cfg: ModelConfig, layer: int) -> nn.Module:
        if not is_sparse(cfg, layer):
            return llama.MLP(cfg, self.tp)
        return SparseMoE(cfg.hidden_size, cfg.moe_intermediate_size, cfg.num_experts, cfg.num_experts_per_tok,
                         cfg.norm_topk_prob)


class CausalLM(llama.CausalLM):
    """Qwen3MoeForCausalLM; KV layout (GQA), embedding, head and forward are Qwen3's."""

    layer_cls = DecoderLayer
    tensor_parallel = False  # experts are not sharded yet

    @staticmethod
    def weight_mapping() -> Mapping[str, tuple[str, object]]:
        """Qwen3's fused q/k/v and gate/up, plus the experts' per-expert tensors into stacked parameters."""
        return WEIGHT_MAPPING
