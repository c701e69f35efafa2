"""TierLM: a compact, fast LLM serving engine built around its caches.

Importing this package first resolves the cache root and points every third-party compile cache
(Triton, Inductor, CUDA, tvm-ffi, FlashInfer, DeepGEMM) under it, before anything imports torch.
Heavier names (`LLM`, `SamplingParams`, `EngineConfig`) are imported lazily so that `tierlm cache`
never pays for torch.
"""
from tierlm.cachedir.env import configure_environment as _configure_environment

_configure_environment()

from tierlm.version import __version__  # noqa: E402
__all__ = ["LLM", "SamplingParams", "EngineConfig", "__version__"]


def __getattr__(name: str):
    if name == "LLM":
        from tierlm.engine.llm import LLM
        return LLM
    if name == "SamplingParams":
        from tierlm.sampling_params import SamplingParams
        return SamplingParams
    if name == "EngineConfig":
        from tierlm.config import EngineConfig
        return EngineConfig
    raise AttributeError(f"module 'tierlm' has no attribute {name!r}")
