"""Workloads of `tierlm bench serve`: random lengths and ids, ShareGPT files and their one-line errors."""
from __future__ import annotations

import json

import pytest

from tierlm.cli.bench.serve_data import random_requests, sharegpt_requests
from tierlm.cli.errors import CLIError


def test_random_lengths_and_ids():
    fixed = random_requests(20, 100, 10, 0.0, seed=1, vocab_size=50)
    assert all(r.prompt_len == len(r.prompt) == 100 and r.output_len == 10 for r in fixed)
    assert all(0 <= t < 50 for r in fixed for t in r.prompt)
    spread = random_requests(200, 100, 10, 0.5, seed=1)
    assert {len(r.prompt) for r in spread} <= set(range(50, 151)) and len({len(r.prompt) for r in spread}) > 20
    assert min(r.output_len for r in spread) >= 5 and max(r.output_len for r in spread) <= 15
    assert random_requests(3, 8, 2, 0.5, seed=7) == random_requests(3, 8, 2, 0.5, seed=7)
    assert len({tuple(r.prompt[:8]) for r in spread}) == 200  # no two prompts share a first page


def test_random_text_with_a_tokenizer(tiny_qwen3):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_qwen3))
    reqs = random_requests(4, 30, 5, 0.0, seed=0, tokenizer=tok)
    assert all(isinstance(r.prompt, str) and r.prompt and r.prompt_len > 0 for r in reqs)


def test_sharegpt_first_turns(tmp_path, tiny_qwen3):
    from transformers import AutoTokenizer

    convs = [{"conversations": [{"from": "human", "value": f"question number {i} about foxes"},
                                {"from": "gpt", "value": "answer " * (5 + i)}]} for i in range(5)]
    convs.append({"conversations": [{"role": "user", "content": "a user asks in the other key style"},
                                    {"role": "assistant", "content": "and gets a reply of some words"}]})
    convs += [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "too short"}]},
              {"conversations": [{"from": "human", "value": "one turn only"}]}, "not a dict"]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(convs))
    tok = AutoTokenizer.from_pretrained(str(tiny_qwen3))
    reqs = sharegpt_requests(str(path), 100, seed=0, tokenizer=tok)
    assert len(reqs) == 6 and all(r.prompt_len >= 4 and r.output_len >= 4 for r in reqs)
    fixed = sharegpt_requests(str(path), 3, seed=0, output_len=7)
    assert len(fixed) == 3 and all(r.output_len == 7 and r.prompt_len is None for r in fixed)


@pytest.mark.parametrize("content, extra, message", [
    (None, {}, "no such file"),
    ("{not json", {}, "not a readable JSON file"),
    ('{"conversations": []}', {}, "expected a JSON list"),
    ('[{"conversations": [{"from": "human", "value": "x"}]}]', {}, "no conversation with two turns"),
    ('[{"conversations": [{"value": "a"}, {"value": "b"}]}]', {"output_len": 0}, "--sharegpt-output-len must be"),
])
def test_sharegpt_errors_name_the_flag(tmp_path, content, extra, message):
    path = tmp_path / "d.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CLIError, match=message):
        sharegpt_requests(str(path), 4, seed=0, **{"output_len": 8, **extra})


def test_sharegpt_without_tokenizer_needs_output_len(tmp_path):
    with pytest.raises(CLIError, match="needs --sharegpt-output-len"):
        sharegpt_requests(str(tmp_path / "x.json"), 4, seed=0)
