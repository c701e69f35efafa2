"""`tierlm make-tiny-model` and `tierlm generate` through the real command line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tierlm import LLM, SamplingParams


def tierlm(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tierlm", *args], input=stdin, capture_output=True, text=True,
                          timeout=300)


ENGINE = ["--device", "cpu", "--dtype", "float32", "--kv-cache-gb", "0.01", "--page-size", "4"]


def test_make_tiny_model_then_generate_matches_offline_api(tmp_path):
    model = tmp_path / "tiny"
    r = tierlm("make-tiny-model", str(model), "--arch", "qwen2")
    assert r.returncode == 0, r.stderr
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello world\n\nthe quick brown fox\n")
    r = tierlm("generate", "--model", str(model), "--prompts-file", str(prompts), "--prompt", "paris is",
               "--max-tokens", "6", "--json", *ENGINE)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["prompt"] for row in rows] == ["paris is", "hello world", "the quick brown fox"]
    ref = LLM(str(model), device="cpu", page_size=4, kv_cache_gb=0.01).generate(
        [row["prompt"] for row in rows], SamplingParams(temperature=0, max_tokens=6))
    assert [row["token_ids"] for row in rows] == [o.token_ids for o in ref]
    assert all(row["finish_reason"] in ("stop", "length") for row in rows)


def test_penalty_flags_reach_the_engine(tiny_qwen3):
    flags = ["--repetition-penalty", "1.3", "--frequency-penalty", "0.5", "--presence-penalty", "0.25"]
    r = tierlm("generate", "--model", str(tiny_qwen3), "--prompt", "the quick brown fox", "--max-tokens", "12",
               "--ignore-eos", "--json", *flags, *ENGINE)
    assert r.returncode == 0, r.stderr
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, repetition_penalty=1.3,
                            frequency_penalty=0.5, presence_penalty=0.25)
    llm = LLM(str(tiny_qwen3), device="cpu", dtype="float32", page_size=4, kv_cache_gb=0.01)
    ref, plain = (llm.generate("the quick brown fox", p)[0].token_ids
                  for p in (params, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)))
    llm.close()
    assert json.loads(r.stdout)["token_ids"] == ref != plain


def test_min_tokens_and_include_stop_flags_reach_the_engine(tiny_qwen3):
    llm = LLM(str(tiny_qwen3), device="cpu", dtype="float32", page_size=4, kv_cache_gb=0.01)
    plain = llm.generate("the quick brown fox", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
    llm.close()
    stop = plain.text[2:4]
    assert stop.strip() and plain.text.find(stop) < len(plain.text) - 2
    r = tierlm("generate", "--model", str(tiny_qwen3), "--prompt", "the quick brown fox", "--max-tokens", "12",
               "--ignore-eos", "--json", "--stop", stop, "--include-stop-str-in-output", *ENGINE)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["text"] == plain.text[:plain.text.find(stop) + len(stop)] and row["finish_reason"] == "stop"
    r = tierlm("generate", "--model", str(tiny_qwen3), "--prompt", "the quick brown fox", "--max-tokens", "12",
               "--ignore-eos", "--json", "--stop", stop, "--min-tokens", "12", *ENGINE)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["token_ids"] == plain.token_ids, "no stop string matches within min_tokens"


def test_prompt_logprobs_and_stop_token_ids_flags(tiny_qwen3):
    llm = LLM(str(tiny_qwen3), device="cpu", dtype="float32", page_size=4, kv_cache_gb=0.01)
    plain = llm.generate("the quick brown fox", SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0]
    scored = llm.generate("the quick brown fox", SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=2))[0]
    llm.close()
    stop = plain.token_ids[3]
    r = tierlm("generate", "--model", str(tiny_qwen3), "--prompt", "the quick brown fox", "--max-tokens", "8",
               "--ignore-eos", "--json", "--stop-token-ids", f"{stop},{stop}", *ENGINE)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["token_ids"] == plain.token_ids[:plain.token_ids.index(stop) + 1] and row["finish_reason"] == "stop"
    r = tierlm("generate", "--model", str(tiny_qwen3), "--prompt", "the quick brown fox", "--max-tokens", "1",
               "--json", "--prompt-logprobs", "2", *ENGINE)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    want = [lp.logprob for lp in scored.prompt_logprobs[1:]]
    assert [e["logprob"] for e in row["prompt_logprobs"][1:]] == pytest.approx(want, abs=1e-5)
    assert row["prompt_logprobs"][0] is None and all(len(e["top"]) == 2 for e in row["prompt_logprobs"][1:])
    assert row["log_likelihood"] == pytest.approx(sum(want), abs=1e-4) and row["scored_tokens"] == len(want)
    r = tierlm("generate", "--model", str(tiny_qwen3), "--prompt", "the quick brown fox", "--max-tokens", "1",
               "--prompt-logprobs", "0", *ENGINE)
    assert r.returncode == 0 and f"over {len(want)} tokens, perplexity" in r.stdout, r.stderr


@pytest.mark.parametrize("args, message", [
    (["--model", "/nonexistent/model", "--prompt", "hi"], "does not exist"),
    (["--model", "{tiny}", "--prompt", "hi", "--max-tokens", "0"], "--max-tokens"),
    (["--model", "{tiny}", "--prompt", "hi", "--temperature", "-1"], "--temperature"),
    (["--model", "{tiny}", "--prompt", "hi", "--repetition-penalty", "0"], "--repetition-penalty: repetition_penalty"),
    (["--model", "{tiny}", "--prompt", "hi", "--presence-penalty", "2.5"], "--presence-penalty: presence_penalty"),
    (["--model", "{tiny}", "--prompt", "hi", "--frequency-penalty", "nan"], "--frequency-penalty: frequency_penalty"),
    (["--model", "{tiny}", "--prompt", "hi", "--sampling-seed", str(2**64)], "--sampling-seed: seed"),
    (["--model", "{tiny}", "--prompt", "hi", "--min-tokens", "9", "--max-tokens", "8"],
     "--min-tokens: min_tokens must be <= max_tokens (8)"),
    (["--model", "{tiny}", "--prompt", "hi", "--min-tokens", "-1"], "--min-tokens: min_tokens must be an integer"),
    (["--model", "{tiny}", "--prompt", "hi", "--prompt-logprobs", "21"], "--prompt-logprobs: prompt_logprobs"),
    (["--model", "{tiny}", "--prompt", "hi", "--stop-token-ids", "5,x"], "--stop-token-ids: expected comma-separated"),
    (["--model", "{tiny}", "--prompts-file", "/nonexistent.txt"], "--prompts-file"),
    (["--model", "{tiny}"], "at least one --prompt"),
    (["--model", "{tiny}", "--prompt", "hi", "--page-size", "0"], "--page-size"),
    (["--model", "{tiny}", "--prompt", "hi", "--kv-cache-gb", "-1"], "--kv-cache-gb"),
    (["--model", "{tiny}", "--prompts-file", "{tiny}"], "--prompts-file '{tiny}' is a directory"),
    (["--model", "{tiny}", "--prompt", "hi", "--kv-cache-gb", "nan"], "--kv-cache-gb: must be a finite number"),
    (["--model", "{tiny}", "--prompt", "hi", "--hicache-ratio", "nan"], "--hicache-ratio: must be a finite number"),
    (["--model", "{tiny}", "--prompt", "hi", "--kv-cache-gb", "1e9"], "--kv-cache-gb"),
    (["--model", "{tiny}", "--prompt", "hi", "--max-model-len", "1000000000000"], "--max-model-len"),
    (["--model", "{tiny}", "--prompt", "hi", "--max-model-len", "513"],
     "--max-model-len 513 is longer than the model's context (512 tokens"),
])
def test_generate_bad_flags_exit_2_with_message(tiny_qwen3, args, message):
    args = [a.replace("{tiny}", str(tiny_qwen3)) for a in args]
    r = tierlm("generate", *args, "--device", "cpu")
    assert r.returncode == 2
    message = message.replace("{tiny}", str(tiny_qwen3))
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("tierlm generate: error:"), r.stderr


def test_bad_rope_scaling_exits_2_naming_the_file_and_field(tiny_qwen3, tmp_path):
    model = tmp_path / "bad"
    model.mkdir()
    cfg = json.loads((tiny_qwen3 / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": None}
    (model / "config.json").write_text(json.dumps(cfg))
    r = tierlm("generate", "--model", str(model), "--prompt", "hi", "--load-format", "dummy", "--device", "cpu")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{model / 'config.json'}: rope_scaling.factor must be a finite number above 0, got None" in r.stderr


def test_help_groups_engine_flags():
    r = tierlm("generate", "--help")
    assert r.returncode == 0
    for group in ("model options", "memory options", "scheduler options", "cache tiers options"):
        assert group in r.stdout


def test_cache_tier_flags_are_accepted(tiny_qwen3):
    r = tierlm("generate", "--model", str(tiny_qwen3), "--prompt", "hello", "--max-tokens", "3", "--json", *ENGINE,
               "--enable-hicache", "--hicache-size", "0.01")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["token_ids"]) > 0


def test_output_into_a_closed_pipe_is_not_a_traceback():
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written, like `| head -0`
    r = subprocess.run([sys.executable, "-m", "tierlm", "cache", "path"], stdout=write_end, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    os.close(write_end)
    assert r.returncode == 141 and "Traceback" not in r.stderr
