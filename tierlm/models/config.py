"""`ModelConfig`: the architecture facts TierLM needs, read from a Hugging Face config.json."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from tierlm.layers.rotary import ROPE_TYPES, rope_type_of
from tierlm.models.errors import ModelLoadError
from tierlm.models.registry import ARCHITECTURES
from tierlm.validation import is_int, is_number

ALLOW_LONG_CONTEXT = "TIERLM_ALLOW_LONG_MAX_MODEL_LEN"  # 1: a context limit beyond the model's is served
# The longest context any limit may reach: the rotary tables hold a row per position up to it (a config or flag
# past it is a mistake, not a model; the longest published contexts are below it).
MAX_POSITIONS = 1 << 24

# ModelConfig field -> the config.json key it comes from; each must be a positive integer.
_POSITIVE = {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "intermediate_size": "intermediate_size",
             "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
             "num_kv_heads": "num_key_value_heads", "head_dim": "head_dim",
             "max_position_embeddings": "max_position_embeddings"}


def _check_sizes(mc: "ModelConfig", source: str) -> None:
    for name, key in _POSITIVE.items():
        value = getattr(mc, name)
        if value < 1:
            raise ModelLoadError(f"{source}: {key} must be a positive integer, got {value}")
    if mc.max_position_embeddings > MAX_POSITIONS:
        raise ModelLoadError(f"{source}: max_position_embeddings {mc.max_position_embeddings} is past the longest "
                             f"context served ({MAX_POSITIONS} tokens)")
    if ARCHITECTURES[mc.architecture].moe:
        for key in ("num_experts", "moe_intermediate_size", "decoder_sparse_step"):
            if getattr(mc, key) < 1:
                raise ModelLoadError(f"{source}: {key} must be a positive integer, got {getattr(mc, key)}")
        if not 1 <= mc.num_experts_per_tok <= mc.num_experts:
            raise ModelLoadError(f"{source}: num_experts_per_tok must be between 1 and num_experts "
                                 f"({mc.num_experts}), got {mc.num_experts_per_tok}")


# the rope_scaling keys each rope type cannot do without (YaRN's factor may come from the context ratio)
_ROPE_KEYS = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                                               "original_max_position_embeddings")}
# rope_scaling keys that, where set, are numbers (the factor is checked on its own, above 0)
_ROPE_NUMBERS = ("low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
                 "attention_factor")


def _check_supported(cfg: dict[str, Any], source: str) -> None:
    """What no model here computes: a quantized checkpoint (its tensors are not the weights the layers take) or an
    MLP activation other than SiLU (outputs would be wrong without an error)."""
    quant = cfg.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else quant
        raise ModelLoadError(f"{source}: quantized checkpoints (quantization_config, {method!r}) are not supported; "
                             "use a bfloat16 one")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ModelLoadError(f"{source}: hidden_act {act!r} is not supported (only silu)")


def _check_norm_and_theta(mc: "ModelConfig", source: str) -> None:
    """`rope_theta` above 0 and `rms_norm_eps` at least 0, both finite: others give NaN rotations or norms, which
    the engine would serve as garbage tokens without an error."""
    if not (math.isfinite(mc.rope_theta) and mc.rope_theta > 0):
        raise ModelLoadError(f"{source}: rope_theta must be a finite number above 0, got {mc.rope_theta!r}")
    if not (math.isfinite(mc.rms_norm_eps) and mc.rms_norm_eps >= 0):
        raise ModelLoadError(f"{source}: rms_norm_eps must be a finite number at least 0, got {mc.rms_norm_eps!r}")


def _check_rope_scaling(mc: "ModelConfig", source: str) -> None:
    """A rope scaling is of a type TierLM computes, with the keys that type needs; its `factor` is a finite number
    above 0 and its `original_max_position_embeddings` a positive integer: both set the context limit's default
    and every position's rotation, so a bad one is refused here, naming the file, not when the model is built."""
    scaling = mc.rope_scaling or {}
    rope_type = rope_type_of(scaling)
    if rope_type not in ROPE_TYPES:
        raise ModelLoadError(f"{source}: rope_scaling type {rope_type!r} is not supported "
                             f"(supported: {', '.join(ROPE_TYPES)})")
    factor = scaling.get("factor")
    if "factor" in scaling and (not is_number(factor) or factor <= 0):
        raise ModelLoadError(f"{source}: rope_scaling.factor must be a finite number above 0, got {factor!r}")
    original = scaling.get("original_max_position_embeddings")
    if "original_max_position_embeddings" in scaling and (
            not is_number(original) or not float(original).is_integer() or original < 1):
        raise ModelLoadError(f"{source}: rope_scaling.original_max_position_embeddings must be a positive integer, "
                             f"got {original!r}")
    missing = [key for key in _ROPE_KEYS.get(rope_type, ()) if scaling.get(key) is None]
    if missing:
        raise ModelLoadError(f"{source}: a {rope_type} rope_scaling needs {', '.join(missing)}")
    for key in _ROPE_NUMBERS:
        value = scaling.get(key)
        if value is not None and not is_number(value):
            raise ModelLoadError(f"{source}: rope_scaling.{key} must be a finite number, got {value!r}")
    if rope_type == "llama3" and not scaling["low_freq_factor"] < scaling["high_freq_factor"]:
        raise ModelLoadError(f"{source}: rope_scaling.low_freq_factor ({scaling['low_freq_factor']!r}) must be below "
                             f"high_freq_factor ({scaling['high_freq_factor']!r})")
    if "factor" in scaling and not math.isfinite(float(factor) * float(original or mc.max_position_embeddings)):
        raise ModelLoadError(f"{source}: rope_scaling.factor {factor!r} stretches the context past any length")
    if mc.max_context > MAX_POSITIONS:
        raise ModelLoadError(f"{source}: rope_scaling.factor {factor!r} stretches the context to {mc.max_context} "
                             f"tokens, past the longest served ({MAX_POSITIONS})")


def _token_id(value: Any) -> int:
    """A token id of `eos_token_id`: an integer (a string or float one would never match a token; a negative one,
    as some configs write for none, matches none either but is harmless)."""
    if not is_int(value):
        raise ValueError(f"eos_token_id must be a token id or a list of them, got {value!r}")
    return value


def _flag(cfg: dict[str, Any], key: str, default: bool) -> bool:
    """A true/false field (the string "false" would read as true)."""
    value = cfg.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def _moe_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """Mixture-of-experts fields (`num_local_experts` is how transformers 5 writes `num_experts`)."""
    experts = cfg.get("num_experts", cfg.get("num_local_experts"))
    if experts is None:
        raise KeyError("num_experts")
    return dict(num_experts=int(experts), num_experts_per_tok=int(cfg["num_experts_per_tok"]),
                moe_intermediate_size=int(cfg["moe_intermediate_size"]),
                norm_topk_prob=bool(cfg.get("norm_topk_prob", False)),
                decoder_sparse_step=int(cfg.get("decoder_sparse_step", 1)),
                mlp_only_layers=tuple(int(i) for i in cfg.get("mlp_only_layers") or ()))


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a decoder-only transformer, independent of the HF config class that described it."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: Optional[dict] = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    torch_dtype: Optional[str] = None
    eos_token_ids: tuple[int, ...] = ()
    # Mixture of experts (0 experts: a dense model); which layers are sparse is the model's rule.
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    raw: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @staticmethod
    def from_dict(cfg: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        archs = cfg.get("architectures") or []
        arch = next((a for a in archs if a in ARCHITECTURES), None)
        if arch is None:
            raise ModelLoadError(f"{source}: unsupported architecture {archs or cfg.get('model_type')!r}; "
                                 f"supported: {', '.join(ARCHITECTURES)}")
        _check_supported(cfg, source)
        qkv_bias, qk_norm = ARCHITECTURES[arch].qkv_bias, ARCHITECTURES[arch].qk_norm
        try:
            heads = int(cfg["num_attention_heads"])
            hidden = int(cfg["hidden_size"])
            rope = cfg.get("rope_parameters") or {}
            scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
            theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
            eos = cfg.get("eos_token_id")
            eos_ids = tuple(_token_id(e) for e in (eos if isinstance(eos, list) else [] if eos is None else [eos]))
            mc = ModelConfig(
                architecture=arch,
                vocab_size=int(cfg["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]),
                num_layers=int(cfg["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                rope_theta=float(theta),
                rope_scaling=dict(scaling) if scaling else None,
                max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
                tie_word_embeddings=_flag(cfg, "tie_word_embeddings", False),
                qkv_bias=_flag(cfg, "attention_bias", qkv_bias) or qkv_bias,
                qk_norm=qk_norm,
                torch_dtype=cfg.get("torch_dtype") or cfg.get("dtype"),
                eos_token_ids=eos_ids,
                **(_moe_fields(cfg) if ARCHITECTURES[arch].moe else {}),
                raw=cfg,
            )
        except KeyError as e:
            raise ModelLoadError(f"{source}: missing required field {e.args[0]!r}") from None
        except ZeroDivisionError:
            raise ModelLoadError(f"{source}: num_attention_heads must be a positive integer, got 0") from None
        except (TypeError, ValueError) as e:
            raise ModelLoadError(f"{source}: invalid value: {e}") from None
        _check_sizes(mc, source)
        _check_norm_and_theta(mc, source)
        _check_rope_scaling(mc, source)
        return mc

    @property
    def max_context(self) -> int:
        """The longest context the model's positions cover: `max_position_embeddings`, or, under a rope scaling
        that stretches the length the config states (linear, YaRN from its `original_max_position_embeddings`), that
        length times the scaling's factor where longer; Llama 3's scaling is already counted in it. vLLM derives
        its longest `max_model_len` by the same rule."""
        scaling = self.rope_scaling or {}
        rope_type = rope_type_of(scaling)
        if rope_type in ("default", "llama3") or "factor" not in scaling:
            return self.max_position_embeddings
        base = self.max_position_embeddings
        if rope_type == "yarn":
            base = int(scaling.get("original_max_position_embeddings", base))
        return max(self.max_position_embeddings, int(base * float(scaling["factor"])))

    def context_limit(self, requested: Optional[int], environ: Optional[Mapping[str, str]] = None,
                      what: Optional[str] = None) -> int:
        """The context limit to serve this model with: `requested` (`--max-model-len`), or the model's
        `max_context` (as vLLM's default: a model stretched by its rope scaling is served at its stretched
        length). One beyond `MAX_POSITIONS` is refused; one beyond `max_context` is refused too (positions the
        model was not made for give wrong outputs, silently) unless `ALLOW_LONG_CONTEXT` is 1 in `environ`
        (default: the process's), as vLLM and SGLang refuse it unless their own variables say otherwise. `what`
        names the request in the error (default: the flag)."""
        if requested is None:
            return self.max_context
        env = os.environ if environ is None else environ
        if requested > MAX_POSITIONS:
            raise ValueError(f"{what or f'--max-model-len {requested}'} is past the longest context served "
                             f"({MAX_POSITIONS} tokens)")
        if requested > self.max_context and env.get(ALLOW_LONG_CONTEXT) != "1":
            raise ValueError(f"{what or f'--max-model-len {requested}'} is longer than the model's context "
                             f"({self.max_context} tokens, by max_position_embeddings and rope_scaling in its "
                             f"config.json): positions past it give wrong outputs. Lower it, or set "
                             f"{ALLOW_LONG_CONTEXT}=1 to serve it anyway")
        return requested

    @staticmethod
    def from_dir(model_dir: Path) -> "ModelConfig":
        path = Path(model_dir) / "config.json"
        if not path.is_file():
            raise ModelLoadError(f"no config.json in model directory {model_dir}")
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(cfg, dict):
            raise ModelLoadError(f"{path} must hold a JSON object")
        return ModelConfig.from_dict(cfg, source=str(path))
