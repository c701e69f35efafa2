"""`GenerationDefaults`: a model's generation_config.json read into request defaults and end-of-sequence ids;
bad files refused naming the file and key."""
from __future__ import annotations

import json

import pytest

from tierlm.models.errors import ModelLoadError
from tierlm.models.generation_config import GenerationDefaults, generation_defaults

QWEN3 = {"bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
         "temperature": 0.6, "top_k": 20, "top_p": 0.95, "transformers_version": "4.51.0"}


def test_a_published_file_gives_its_sampling_and_end_ids():
    d = GenerationDefaults.from_dict(QWEN3)
    assert d.as_dict() == {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    assert d.eos_token_ids == (151645, 151643) and d.ignored == ()
    assert d.describe() == "temperature=0.6, top_p=0.95, top_k=20, eos_token_id=[151645, 151643]"


def test_top_k_zero_is_off_and_what_is_not_applied_is_reported():
    d = GenerationDefaults.from_dict({"top_k": 0, "repetition_penalty": 1.05, "eos_token_id": 7})  # Qwen2.5's
    assert d.as_dict() == {"top_k": -1, "repetition_penalty": 1.05} and d.eos_token_ids == (7,)
    assert d.ignored == () and d.describe() == "top_k=-1, repetition_penalty=1.05, eos_token_id=[7]"
    assert GenerationDefaults.from_dict({"max_new_tokens": 2048}).describe() == "nothing (max_new_tokens not applied)"
    assert GenerationDefaults.from_dict({}).describe() == "nothing"


@pytest.mark.parametrize("cfg, message", [
    ({"temperature": -0.5}, "temperature must be a number in \\[0, inf\\], got -0.5"),
    ({"temperature": "hot"}, "temperature must be a number in \\[0, inf\\], got 'hot'"),
    ({"top_p": 0}, "top_p must be a number in \\(0, 1\\], got 0"),
    ({"top_p": 1.5}, "top_p must be a number in \\(0, 1\\], got 1.5"),
    ({"repetition_penalty": 0}, "repetition_penalty must be a number in \\(0, 100\\], got 0"),
    ({"repetition_penalty": -1.1}, "repetition_penalty must be a number in \\(0, 100\\], got -1.1"),
    ({"repetition_penalty": "1.1"}, "repetition_penalty must be a number in \\(0, 100\\], got '1.1'"),
    ({"top_k": 2.5}, "top_k must be an integer at least 0, got 2.5"),
    ({"top_k": True}, "top_k must be an integer at least 0, got True"),
    ({"min_p": float("nan")}, "min_p must be a number in \\[0, 1\\], got nan"),
    ({"eos_token_id": [1, "2"]}, "eos_token_id must be a token id or a list of them, got \\[1, '2'\\]"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, cfg, message):
    (tmp_path / "generation_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=f"generation_config.json: {message}"):
        GenerationDefaults.read(tmp_path)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\udcff"])
def test_a_file_that_is_not_a_json_object_is_refused_naming_it(tmp_path, text):
    (tmp_path / "generation_config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ModelLoadError, match=f"{tmp_path / 'generation_config.json'}: "):
        GenerationDefaults.read(tmp_path)


def test_the_setting_picks_the_file(tmp_path):
    model, other = tmp_path / "model", tmp_path / "other"
    model.mkdir()
    other.mkdir()
    (model / "generation_config.json").write_text(json.dumps({"temperature": 0.6}))
    (other / "generation_config.json").write_text(json.dumps({"temperature": 0.2}))
    assert generation_defaults("auto", model).as_dict() == {"temperature": 0.6}
    assert generation_defaults("none", model) == GenerationDefaults()
    assert generation_defaults(str(other), model).as_dict() == {"temperature": 0.2}
    assert generation_defaults("auto", other / "missing") == GenerationDefaults()  # no file: nothing to apply
    with pytest.raises(ModelLoadError, match="--generation-config .*missing: no generation_config.json"):
        generation_defaults(str(tmp_path / "missing"), model)
