"""Attention backends by name: `--attention-backend NAME` resolves here (classes import on first use)."""
from __future__ import annotations

import importlib

from tierlm.attention.base import AttentionBackend

# name -> "module:Class"; a new backend is one file plus one line here
_BACKENDS = {
    "torch": "tierlm.attention.torch_native:TorchNativeBackend",
    "triton": "tierlm.attention.triton_backend:TritonBackend",
}


def backend_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def backend_class(name: str) -> type[AttentionBackend]:
    """The class registered as `name`; ValueError naming the flag for an unknown name."""
    if name not in _BACKENDS:
        raise ValueError(f"--attention-backend: unknown backend {name!r} (choose from {', '.join(_BACKENDS)})")
    module, cls = _BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)
