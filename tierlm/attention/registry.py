"""Attention backends by name: `--attention-backend NAME` resolves here (classes import on first use).

Backends are registered per attention kind, which the model class declares (`attention_kind`, "gqa" when
absent): per-head K/V ("gqa") or one latent per token ("mla")."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry itself imports no torch: the CLI reads its names for --help
    from tierlm.attention.base import AttentionBackend

# (attention kind, name) -> "module:Class"; a new backend is one file plus one line here
_BACKENDS = {
    ("gqa", "torch"): "tierlm.attention.torch_native:TorchNativeBackend",
    ("gqa", "triton"): "tierlm.attention.triton_backend:TritonBackend",
    ("mla", "torch"): "tierlm.attention.mla_torch:MLATorchBackend",
    ("mla", "triton"): "tierlm.attention.mla_triton:MLATritonBackend",
}


def auto_backend(device_type: str) -> str:
    """What `--attention-backend auto` means on this device type: Triton on CUDA, torch elsewhere (every
    attention kind registers both)."""
    return "triton" if device_type == "cuda" else "torch"


def backend_names(kind: str = "gqa") -> tuple[str, ...]:
    return tuple(name for k, name in _BACKENDS if k == kind)


def all_backend_names() -> tuple[str, ...]:
    """Every registered name, whatever its attention kind (the CLI's choices)."""
    return tuple(dict.fromkeys(name for _, name in _BACKENDS))


def backend_class(name: str, kind: str = "gqa") -> "type[AttentionBackend]":
    """The class registered as `name` for `kind`; ValueError naming the flag for an unknown name or one
    without a backend of this kind."""
    if (kind, name) not in _BACKENDS:
        if any(n == name for _, n in _BACKENDS):
            raise ValueError(f"--attention-backend: {name!r} has no {kind} attention (this model's kind); "
                             f"choose from {', '.join(backend_names(kind))}")
        raise ValueError(f"--attention-backend: unknown backend {name!r} "
                         f"(choose from {', '.join(backend_names(kind))})")
    module, cls = _BACKENDS[(kind, name)].split(":")
    return getattr(importlib.import_module(module), cls)
