"""Architectures by Hugging Face name: which model class serves a `config.json`, and its per-family flags.

A new model family is its own module plus one entry here; the class is imported on first use.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class ArchSpec:
    """Where the model class lives (`module:Class`) and the config facts its family implies."""

    model: str
    qkv_bias: bool = False
    qk_norm: bool = False
    moe: bool = False  # config.json must give the mixture-of-experts fields


ARCHITECTURES = MappingProxyType({
    "LlamaForCausalLM": ArchSpec("tierlm.models.llama:CausalLM"),
    "MistralForCausalLM": ArchSpec("tierlm.models.llama:CausalLM"),
    "Qwen2ForCausalLM": ArchSpec("tierlm.models.llama:CausalLM", qkv_bias=True),
    "Qwen3ForCausalLM": ArchSpec("tierlm.models.llama:CausalLM", qk_norm=True),
    "Qwen3MoeForCausalLM": ArchSpec("tierlm.models.qwen3_moe:CausalLM", qk_norm=True, moe=True),
    "DeepseekV2ForCausalLM": ArchSpec("tierlm.models.deepseek:DeepseekForCausalLM"),
    "DeepseekV3ForCausalLM": ArchSpec("tierlm.models.deepseek:DeepseekForCausalLM"),
})


def model_class(architecture: str) -> Any:
    """The model class registered for `architecture` (a key of `ARCHITECTURES`)."""
    module, cls = ARCHITECTURES[architecture].model.split(":")
    return getattr(importlib.import_module(module), cls)
