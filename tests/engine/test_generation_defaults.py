"""The offline `LLM` under a model's generation_config.json: its sampling is the default of `generate` without
params, its end-of-sequence ids stop generation; `--generation-config none` ignores both."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams

PROMPT = "the quick brown fox jumps over the lazy dog"


def with_generation_config(model: Path, folder: Path, cfg: dict) -> Path:
    """A copy of `model` (links to its files) whose generation_config.json is `cfg`."""
    folder.mkdir()
    for f in model.iterdir():
        if f.name != "generation_config.json":
            (folder / f.name).symlink_to(f)
    (folder / "generation_config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture(scope="module")
def reference(tiny_qwen3):
    """The plain model's greedy tokens for PROMPT (never an end-of-sequence id within them)."""
    llm = LLM(str(tiny_qwen3), **CPU_OPTS)
    out = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=16))[0].token_ids
    llm.close()
    return out


def test_the_models_sampling_is_the_default(tiny_qwen3, tmp_path, reference):
    model = with_generation_config(tiny_qwen3, tmp_path / "m", {"temperature": 0.0, "do_sample": True})
    llm = LLM(str(model), **CPU_OPTS)
    assert llm.default_sampling_params().temperature == 0.0
    assert llm.generate(PROMPT, llm.default_sampling_params())[0].token_ids == reference
    assert llm.generate([PROMPT] * 3)[0].token_ids == reference  # generate's default params
    llm.close()
    ignored = LLM(str(model), generation_config="none", **CPU_OPTS)
    assert ignored.default_sampling_params() == SamplingParams()
    ignored.close()


def test_its_end_ids_stop_generation(tiny_qwen3, tmp_path, reference):
    stop_at = next(i for i, t in enumerate(reference) if i >= 2 and t not in reference[:i])
    model = with_generation_config(tiny_qwen3, tmp_path / "m", {"eos_token_id": [0, reference[stop_at]]})
    greedy = SamplingParams(temperature=0, max_tokens=16)
    llm = LLM(str(model), **CPU_OPTS)
    out = llm.generate(PROMPT, greedy)[0]
    llm.close()
    assert out.token_ids == reference[:stop_at + 1] and out.finish_reason == "stop"
    llm = LLM(str(model), generation_config="none", **CPU_OPTS)
    assert llm.generate(PROMPT, greedy)[0].token_ids == reference
    llm.close()


def test_a_bad_file_is_refused_at_load(tiny_qwen3, tmp_path):
    from tierlm.engine.errors import ModelLoadError

    model = with_generation_config(tiny_qwen3, tmp_path / "m", {"top_p": 7})
    with pytest.raises(ModelLoadError, match="generation_config.json: top_p must be a number in"):
        LLM(str(model), **CPU_OPTS)
