"""`DeepseekConfig`: the latent-attention and MoE facts of a DeepSeek-V2/V3 config.json.

Read from `ModelConfig.raw`; a key the file leaves out takes the default of the matching `transformers`
config class, so both load the same model from the same file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from tierlm.layers.yarn import yarn_softmax_scale
from tierlm.models.config import ModelConfig
from tierlm.models.errors import ModelLoadError

_COMMON = dict(kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
               moe_layer_freq=1, attention_bias=False)
_DEFAULTS = {
    "DeepseekV2ForCausalLM": dict(_COMMON, first_k_dense_replace=0, n_routed_experts=64, num_experts_per_tok=None,
                                  n_shared_experts=2, moe_intermediate_size=1407, routed_scaling_factor=1.0,
                                  topk_method="greedy", n_group=None, topk_group=None, norm_topk_prob=False),
    "DeepseekV3ForCausalLM": dict(_COMMON, first_k_dense_replace=3, n_routed_experts=256, num_experts_per_tok=8,
                                  n_shared_experts=1, moe_intermediate_size=2048, routed_scaling_factor=2.5,
                                  topk_method="noaux_tc", n_group=8, topk_group=4, norm_topk_prob=True,
                                  rope_interleave=True),
}
_V2_TOPK = ("greedy", "group_limited_greedy")


def _number(raw: dict[str, Any], key: str, source: str) -> float:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ModelLoadError(f"{source}: {key} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DeepseekConfig:
    """Multi-head latent attention dims, the dense/MoE layer pattern and the routing rule.

    `scoring` is "softmax" (V2: softmax scores, `topk_method` greedy or group_limited_greedy) or "sigmoid"
    (V3: sigmoid scores plus `e_score_correction_bias` choose experts within the best `topk_group` of
    `n_group` groups). `rope_style` is how the rope dims are paired: "complex" (V2: interleaved pairs, output
    interleaved), "interleave" (V3: interleaved pairs, output halves) or "half" (rotate-half pairs).
    """

    model: ModelConfig
    q_lora_rank: Optional[int]
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    n_routed_experts: int  # 0: every layer dense
    num_experts_per_tok: int
    n_shared_experts: int
    moe_intermediate_size: int
    first_k_dense_replace: int
    moe_layer_freq: int
    routed_scaling_factor: float
    scoring: str
    topk_method: str
    n_group: int
    topk_group: int
    norm_topk_prob: bool
    attention_bias: bool
    rope_style: str

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Width of one cached token: the normalized compressed KV, then the roped shared key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def softmax_scale(self) -> float:
        """`qk_head_dim ** -0.5`, times YaRN's `mscale(factor, mscale_all_dim) ** 2` when the rope is scaled."""
        return yarn_softmax_scale(self.model.rope_scaling, self.qk_head_dim ** -0.5, self.model.max_position_embeddings)

    def is_moe_layer(self, layer: int) -> bool:
        return (self.n_routed_experts > 0 and layer >= self.first_k_dense_replace
                and layer % self.moe_layer_freq == 0)

    @staticmethod
    def from_model_config(mc: ModelConfig, source: str = "config.json") -> "DeepseekConfig":
        raw: dict[str, Any] = {**_DEFAULTS[mc.architecture], **mc.raw}

        def pos(key: str, allow_none: bool = False, minimum: int = 1) -> Optional[int]:
            value = raw[key]
            if value is None and allow_none:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                word = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
                raise ModelLoadError(f"{source}: {key} must be {word}{' or null' if allow_none else ''}, "
                                     f"got {value!r}")
            return value

        v3 = mc.architecture == "DeepseekV3ForCausalLM"
        experts = pos("n_routed_experts", allow_none=True) or 0
        per_tok = pos("num_experts_per_tok", allow_none=not experts) or 0
        if experts and per_tok > experts:
            raise ModelLoadError(f"{source}: num_experts_per_tok ({per_tok}) exceeds n_routed_experts ({experts})")
        topk_method = raw["topk_method"]
        if not v3 and topk_method not in _V2_TOPK:
            raise ModelLoadError(f"{source}: topk_method {topk_method!r} is not supported "
                                 f"(choose from {', '.join(_V2_TOPK)})")
        grouped = v3 or topk_method == "group_limited_greedy"
        n_group = (pos("n_group") if grouped else None) or 1
        topk_group = (pos("topk_group") if grouped else None) or 1
        if experts and (experts % n_group or topk_group > n_group):
            raise ModelLoadError(f"{source}: n_group ({n_group}) must divide n_routed_experts ({experts}) and be "
                                 f">= topk_group ({topk_group})")
        return DeepseekConfig(
            model=mc, q_lora_rank=pos("q_lora_rank", allow_none=True), kv_lora_rank=pos("kv_lora_rank"),
            qk_nope_head_dim=pos("qk_nope_head_dim"), qk_rope_head_dim=pos("qk_rope_head_dim"),
            v_head_dim=pos("v_head_dim"), n_routed_experts=experts, num_experts_per_tok=per_tok,
            n_shared_experts=pos("n_shared_experts", allow_none=True, minimum=0) or 0,
            moe_intermediate_size=pos("moe_intermediate_size"),
            first_k_dense_replace=pos("first_k_dense_replace", minimum=0), moe_layer_freq=pos("moe_layer_freq"),
            routed_scaling_factor=_number(raw, "routed_scaling_factor", source), scoring="sigmoid" if v3 else "softmax",
            topk_method=topk_method, n_group=n_group, topk_group=topk_group,
            norm_topk_prob=bool(raw["norm_topk_prob"]), attention_bias=bool(raw["attention_bias"]),
            rope_style=("interleave" if raw["rope_interleave"] else "half") if v3 else "complex")
