"""The context limit a benchmark runs the engine with: `--max-model-len` as given, else a short default within the
model's own context (a smaller request table and graphs than the model's full context would need), raised to fit
the workload's longest request; never past the model's context unless its variable allows it
(`ModelConfig.context_limit`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from tierlm.config import EngineConfig

if TYPE_CHECKING:
    from tierlm.models.config import ModelConfig

BENCH_CONTEXT = 2048  # tokens, when --max-model-len is not given and the model allows as many


def bench_context(config: EngineConfig, longest: int, what: str) -> int:
    """The context limit for a workload whose longest request holds `longest` tokens (`what` names it, and the
    flags that set it, in the error). Raises `ModelLoadError` for a model that cannot be read and `ValueError` for
    a limit beyond the model's."""
    from tierlm.models.config import ModelConfig
    from tierlm.models.loader import resolve_model_dir

    model_cfg = ModelConfig.from_dir(resolve_model_dir(config.model, config.revision, need_weights=False))
    return fitted_context(model_cfg, config.max_model_len, longest, what)


def fitted_context(model_cfg: "ModelConfig", asked: Optional[int], longest: int, what: str,
                   default: int = BENCH_CONTEXT) -> int:
    """`bench_context` for a model config already read: `asked` (`--max-model-len`), else `default` within the
    model's context, raised to `longest`; the error names the flag where the limit is the one asked, else `what`."""
    limit = max(longest, asked if asked is not None else min(default, model_cfg.max_context))
    return model_cfg.context_limit(limit, what=None if limit == asked else what)
