"""Bad requests and bad model directories fail with a clear message; the engine keeps serving."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.engine.errors import ModelLoadError, PromptTooLongError, RequestError


@pytest.fixture(scope="module")
def llm(tiny_qwen3):
    return LLM(str(tiny_qwen3), **{**CPU_OPTS, "max_model_len": 64})


@pytest.mark.parametrize("prompt, params, message", [
    ([], SamplingParams(), "prompt is empty"),
    ("", SamplingParams(), "prompt is empty"),
    ([5] * 64, SamplingParams(), "context limit"),
    ("hi", SamplingParams(max_tokens=0), "max_tokens"),
    ("hi", SamplingParams(max_tokens=-3), "max_tokens"),
    ("hi", SamplingParams(temperature=-0.5), "temperature"),
    ("hi", SamplingParams(top_p=0.0), "top_p"),
    ("hi", SamplingParams(top_p=1.5), "top_p"),
    ("hi", SamplingParams(top_k=-2), "top_k"),
    ("hi", SamplingParams(min_p=2.0), "min_p"),
    ([10**9], SamplingParams(), "token ids"),
    ([5, None, 6], SamplingParams(), "token ids"),
    ([5, True], SamplingParams(), "token ids"),
    ([5, -1], SamplingParams(), "token ids"),
    ("hi", SamplingParams(stop_token_ids=[None]), "stop_token_ids"),
    ("hi", SamplingParams(stop=["ok", "\ud800"]), "stop: invalid Unicode"),
    ("hi", SamplingParams(stop_token_ids=[2**70]), "stop_token_ids"),
    ("hi", SamplingParams(top_p=float("nan")), "top_p"),
])
def test_bad_request_errors_and_others_still_served(llm, prompt, params, message):
    good = SamplingParams(temperature=0, max_tokens=4)
    outs = llm.generate(["hello world", prompt, "the quick brown"], [good, params, good])
    assert outs[1].finish_reason == "error" and message in outs[1].error
    assert outs[0].error is None and len(outs[0].token_ids) > 0
    assert outs[2].error is None and len(outs[2].token_ids) > 0


def test_add_request_raises_typed_errors(llm):
    with pytest.raises(PromptTooLongError) as too_long:
        llm.engine.add_request("long", [5] * 100, SamplingParams())
    with pytest.raises(RequestError) as bad:
        llm.engine.add_request("neg", [5], SamplingParams(temperature=-1))
    assert not llm.engine.has_unfinished()
    # The server answers each error with its type's status and names the field: no mapping of its own.
    assert (too_long.value.http_status, too_long.value.param, too_long.value.code) == (
        413, "prompt", "context_length_exceeded")
    assert (bad.value.http_status, bad.value.param) == (400, "temperature")


def test_unknown_model_dir(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        LLM(str(tmp_path / "nope"), **CPU_OPTS)


def test_corrupt_config_json(tiny_qwen3, tmp_path):
    bad = shutil.copytree(tiny_qwen3, tmp_path / "m")
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json is not valid JSON"):
        LLM(str(bad), **CPU_OPTS)


def test_unsupported_architecture(tiny_qwen3, tmp_path):
    bad = shutil.copytree(tiny_qwen3, tmp_path / "m")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="unsupported architecture"):
        LLM(str(bad), **CPU_OPTS)


def test_missing_shard(tiny_models, tmp_path):
    bad = shutil.copytree(tiny_models["llama"], tmp_path / "m")
    shard = sorted(bad.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(ModelLoadError, match=f"shard '{shard.name}'.*missing"):
        LLM(str(bad), **CPU_OPTS)


def test_truncated_weights_name_the_file(tiny_qwen3, tmp_path):
    import os

    bad = shutil.copytree(tiny_qwen3, tmp_path / "m")
    weights = bad / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(ModelLoadError, match=f"cannot read safetensors file {weights}"):
        LLM(str(bad), **CPU_OPTS)


def test_zero_layers_is_blamed_on_the_config(tiny_qwen3, tmp_path):
    bad = shutil.copytree(tiny_qwen3, tmp_path / "m")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["num_hidden_layers"] = 0
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="config.json: num_hidden_layers must be a positive integer"):
        LLM(str(bad), **CPU_OPTS)


def test_mismatched_tensor_names_file_and_shapes(tiny_qwen3, tmp_path):
    bad = shutil.copytree(tiny_qwen3, tmp_path / "m")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"mlp\.(gate|up|down)_proj\.weight' in model.safetensors has shape"):
        LLM(str(bad), **CPU_OPTS)


def test_missing_tensor_is_named(tiny_qwen3, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = shutil.copytree(tiny_qwen3, tmp_path / "m")
    tensors = load_file(bad / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"lacks tensor\(s\): model.layers.1.self_attn.k_proj.weight"):
        LLM(str(bad), **CPU_OPTS)


def test_dummy_weights_need_no_safetensors(tiny_qwen3, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    for f in tiny_qwen3.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, d / f.name)
    with pytest.raises(ModelLoadError, match="no \\*.safetensors"):
        LLM(str(d), **CPU_OPTS)
    out = LLM(str(d), load_format="dummy", **CPU_OPTS).generate("hello", SamplingParams(max_tokens=3, ignore_eos=True))
    assert len(out[0].token_ids) == 3


def test_default_context_follows_the_rope_scaling(tiny_qwen3, tmp_path):
    """Without --max-model-len a model stretched by its rope scaling takes prompts past max_position_embeddings
    (512 here; linear x2 covers 1024), as vLLM's default does; the same prompt to the unstretched model is refused."""
    stretched = tmp_path / "stretched"
    shutil.copytree(tiny_qwen3, stretched)
    cfg = json.loads((stretched / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    (stretched / "config.json").write_text(json.dumps(cfg))
    params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    opts = {**CPU_OPTS, "load_format": "dummy"}
    out = LLM(str(stretched), **opts).generate([[5] * 700], params)[0]
    assert out.error is None and len(out.token_ids) == 3
    out = LLM(str(tiny_qwen3), **opts).generate([[5] * 700], params)[0]
    assert out.finish_reason == "error" and "context limit is 512 tokens" in out.error
