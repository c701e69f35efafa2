"""The model runner builds a model in its serving dtype: no parameter is ever made in float32 first, except the
ones a model keeps in float32 on purpose (DeepSeek's router)."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import CPU_OPTS
from tierlm import LLM
from tierlm.models.loader import building_in


@pytest.mark.parametrize("arch", ["qwen3", "deepseek_v2"])
def test_parameters_are_made_in_the_serving_dtype(tiny_models, monkeypatch, arch):
    made = []
    register = torch.nn.Module.register_parameter

    def spy(module, name, param):
        if param is not None:
            made.append((f"{type(module).__name__}.{name}", param.dtype))
        return register(module, name, param)

    monkeypatch.setattr(torch.nn.Module, "register_parameter", spy)
    llm = LLM(str(tiny_models[arch]), **{**CPU_OPTS, "dtype": "bfloat16"})
    try:
        assert made
        wide = {name for name, dtype in made if dtype != torch.bfloat16}
        assert wide <= {"Router.weight", "Router.e_score_correction_bias"}, wide
        assert torch.get_default_dtype() == torch.float32, "the default dtype is restored"
    finally:
        llm.close()


def test_building_in_restores_the_default_dtype_after_an_error():
    with pytest.raises(RuntimeError, match="boom"):
        with building_in(torch.device("cpu"), torch.float16):
            assert torch.empty(1).dtype == torch.float16
            raise RuntimeError("boom")
    assert torch.get_default_dtype() == torch.float32 and torch.empty(1).dtype == torch.float32


@pytest.mark.parametrize("stated, want, warned", [
    ("float16", torch.float16, False), ("torch.float32", torch.bfloat16, False), ("bfloat16", torch.bfloat16, False),
    (None, torch.bfloat16, False),
    ("float64", torch.bfloat16, True)])
def test_auto_dtype_follows_the_config_float32_as_bf16_on_a_gpu(caplog, stated, want, warned):
    from types import SimpleNamespace

    from tierlm.engine.model_runner import resolve_dtype
    cfg = SimpleNamespace(torch_dtype=stated)
    with caplog.at_level("WARNING", logger="tierlm.engine.model_runner"):
        assert resolve_dtype("auto", cfg, torch.device("meta")) == want
        assert resolve_dtype("float16", cfg, torch.device("meta")) == torch.float16
    assert ("'float64'" in caplog.text and "--dtype" in caplog.text) == warned
    assert resolve_dtype("auto", cfg, torch.device("cpu")) == torch.float32
    assert resolve_dtype("float32", cfg, torch.device("meta")) == torch.float32
