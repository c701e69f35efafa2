"""Structured outputs (`SamplingParams.json_schema`, `engine.guided`): greedy and sampled requests produce JSON that
follows their schema and end when it is complete, beside requests without a schema whose tokens do not change
(overlap scheduling on: a pass with a guided request samples after the tokens in flight are read, and a guided
request decodes every step, its tokens as without overlap); a schema the grammar compiler cannot
take, a malformed one and a tokenizer-less engine are refused before anything runs."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.config import EngineConfig
from tierlm.engine.engine import Engine
from tierlm.errors import RequestError

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green", "blue"]},
                                           "n": {"type": "integer", "minimum": 0, "maximum": 9}},
          "required": ["ok", "color", "n"], "additionalProperties": False}
PROMPTS = ["the quick brown fox", "hello there", "paris is", "one two three four"]


def _valid(text: str) -> bool:
    doc = json.loads(text)
    return (set(doc) == {"ok", "color", "n"} and isinstance(doc["ok"], bool)
            and doc["color"] in ("red", "green", "blue") and isinstance(doc["n"], int) and 0 <= doc["n"] <= 9)


@pytest.fixture(scope="module")
def llm(tiny_qwen3):
    engine = LLM(str(tiny_qwen3), **CPU_OPTS)
    assert engine.engine.overlap  # sampling a guided pass after the tokens in flight is what is under test
    yield engine
    engine.close()


def test_outputs_follow_the_schema_beside_free_requests(llm):
    schema = json.dumps(SCHEMA)
    free = [SamplingParams(max_tokens=10, temperature=0, ignore_eos=True) for _ in PROMPTS]
    alone = [o.token_ids for o in llm.generate(PROMPTS, free)]
    guided = [SamplingParams(max_tokens=60, temperature=0, json_schema=schema),
              SamplingParams(max_tokens=60, temperature=1.0, seed=7, json_schema=schema)]
    outs = llm.generate(PROMPTS * 2, free + guided * 2)
    assert [o.token_ids for o in outs[:4]] == alone  # free requests are not held up or changed by guided ones
    for o in outs[4:]:
        assert o.finish_reason == "stop" and o.error is None and _valid(o.text), o.text
    assert outs[4].token_ids == llm.generate(PROMPTS[:1], guided[0])[0].token_ids  # greedy: as when run alone
    any_object = llm.generate(PROMPTS[:1], SamplingParams(max_tokens=40, temperature=0,
                                                          json_schema='{"type": "object"}'))[0]
    assert any_object.text.startswith("{")
    if any_object.finish_reason == "stop":
        assert isinstance(json.loads(any_object.text), dict)


def test_under_overlap_a_guided_request_decodes_every_step_as_without_overlap(tiny_qwen3, llm):
    engine = llm.engine
    schema = json.dumps(SCHEMA)
    params = [SamplingParams(max_tokens=60, temperature=0, json_schema=schema),
              SamplingParams(max_tokens=60, temperature=1.0, seed=3, json_schema=schema),
              SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, repetition_penalty=1.3, min_tokens=5),
              SamplingParams(max_tokens=12, temperature=0.8, seed=5, presence_penalty=0.5)]
    for i, p in enumerate(params):
        engine.add_request(str(i), [5 + i, 6, 7, 8], p)
    steps, outs, spans = 0, {}, {}
    while engine.has_unfinished():
        steps += 1
        for o in engine.step():
            outs.setdefault(o.request_id, []).extend(o.new_token_ids)
            if o.new_token_ids:
                spans.setdefault(o.request_id, [steps, 0])[1] = steps
    for rid in "01":  # a token every step from its first to its last (but where another's prefill runs alone)
        assert spans[rid][1] - spans[rid][0] + 1 <= len(outs[rid]) + 2, (spans[rid], len(outs[rid]))
    serial = LLM(str(tiny_qwen3), overlap_schedule=False, **CPU_OPTS)
    got = serial.generate([[5 + i, 6, 7, 8] for i in range(len(params))], params)
    serial.close()
    assert [o.token_ids for o in got] == [outs[str(i)] for i in range(len(params))]
    assert all(_valid(o.text) for o in got[:2])


def test_a_guided_request_ends_when_its_grammar_is_complete_even_past_eos(llm):
    out = llm.generate(PROMPTS[:1], SamplingParams(max_tokens=60, temperature=0, ignore_eos=True,
                                                   json_schema=json.dumps(SCHEMA)))[0]
    assert out.finish_reason == "stop" and _valid(out.text)


@pytest.mark.parametrize("schema, message", [
    ('{"type": "wat"}', "not a JSON schema this engine can follow"),
    ("{not json", "json_schema is not JSON"),
    ("[1, 2]", "must be a JSON object"),
    (7, "must be a JSON schema as text"),
])
def test_bad_schemas_are_refused(llm, schema, message):
    out = llm.generate(["x"], SamplingParams(max_tokens=4, json_schema=schema))[0]
    assert out.finish_reason == "error" and message in out.error
    assert not llm.engine.guided._matchers and llm.engine.scheduler.num_guided == 0


def test_min_tokens_with_a_schema_is_refused(llm):
    with pytest.raises(RequestError, match="min_tokens cannot be combined with json_schema, regex or ebnf"):
        SamplingParams(min_tokens=3, json_schema='{"type": "object"}').validate(512)
    with pytest.raises(RequestError, match="give json_schema or regex, not both"):
        SamplingParams(regex="a+", json_schema='{"type": "object"}').validate(512)


def test_a_regex_output_matches_it_whole(llm):
    import re

    pattern = r"(yes|no)-[0-9]{2}( ok)?"
    outs = llm.generate(PROMPTS, [SamplingParams(max_tokens=30, temperature=t, seed=1, regex=pattern)
                                  for t in (0, 1.0, 0, 1.0)])
    assert all(o.finish_reason == "stop" and re.fullmatch(pattern, o.text) for o in outs), [o.text for o in outs]
    bad = llm.generate(["x"], SamplingParams(max_tokens=4, regex="(unclosed"))[0]
    assert bad.finish_reason == "error" and "regex: not a regular expression this engine can follow" in bad.error


def test_an_ebnf_output_follows_its_grammar(llm):
    import re

    grammar = 'root ::= "[" item ("," item)* "]"\nitem ::= [a-c] | "d" [0-9]'
    outs = llm.generate(PROMPTS, [SamplingParams(max_tokens=30, temperature=t, seed=2, ebnf=grammar)
                                  for t in (0, 1.0, 0, 1.0)])
    pattern = r"\[([a-c]|d[0-9])(,([a-c]|d[0-9]))*\]"
    assert all(o.finish_reason != "stop" or re.fullmatch(pattern, o.text) for o in outs), [o.text for o in outs]
    assert any(o.finish_reason == "stop" for o in outs)
    bad = llm.generate(["x"], SamplingParams(max_tokens=4, ebnf="root ::= missing"))[0]
    assert bad.finish_reason == "error" and "ebnf: not an EBNF grammar this engine can follow" in bad.error


def test_an_engine_without_a_tokenizer_refuses_a_schema(tiny_qwen3):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), skip_tokenizer_init=True, **CPU_OPTS))
    with pytest.raises(RequestError, match="needs the model's tokenizer"):
        engine.add_request("r", [1, 2, 3], SamplingParams(json_schema='{"type": "object"}', detokenize=False))
    engine.close()


def test_an_aborted_guided_request_leaves_nothing_behind(llm):
    engine = llm.engine
    engine.add_request("g", [5, 6, 7, 8], SamplingParams(max_tokens=50, temperature=0, json_schema=json.dumps(SCHEMA)))
    engine.step()
    engine.abort_request("g")
    while engine.has_unfinished():
        engine.step()
    assert not engine.guided._matchers and engine.scheduler.num_guided == 0


def test_tensor_parallel_guides_as_one_device(tiny_qwen3, llm):
    params = SamplingParams(max_tokens=60, temperature=0, json_schema=json.dumps(SCHEMA))
    want = [o.token_ids for o in llm.generate(PROMPTS[:2], params)]
    two = LLM(str(tiny_qwen3), tp_size=2, **CPU_OPTS)
    got = two.generate(PROMPTS[:2], params)
    two.close()
    assert [o.token_ids for o in got] == want and all(_valid(o.text) for o in got)


def _drain(engine, outs: dict) -> None:
    while engine.has_unfinished():
        for o in engine.step():
            outs.setdefault(o.request_id, []).append(o)


def test_a_slow_grammar_compile_holds_back_nothing_else(llm, monkeypatch):
    import threading

    engine, gate = llm.engine, threading.Event()
    compile_ = engine.guided._compile
    monkeypatch.setattr(engine.guided, "_compile", lambda grammar: gate.wait(30) and compile_(grammar))
    engine.add_request("free", [5, 6, 7], SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))
    schema = SamplingParams(max_tokens=60, temperature=0, json_schema=json.dumps(SCHEMA))
    engine.add_request("g", [5, 6, 7, 8], schema)
    engine.add_request("gone", [9, 9], schema)
    with pytest.raises(RequestError, match="already in use"):
        engine.add_request("g", [1], schema)
    assert engine.num_waiting() == 3 and engine.guided.num_compiling == 2
    outs: dict = {}
    while not any(o.finished for o in outs.get("free", [])):  # the free request runs to its end meanwhile
        for o in engine.step():
            outs.setdefault(o.request_id, []).append(o)
    assert sum(len(o.new_token_ids) for o in outs["free"]) == 8 and set(outs) == {"free"}
    engine.abort_request("gone")  # still compiling
    gate.set()
    _drain(engine, outs)
    assert [o.finish_reason for o in outs["gone"]] == ["abort"]
    text = "".join(o.new_text for o in outs["g"])
    assert outs["g"][-1].finish_reason == "stop" and _valid(text), text
    assert not engine.guided._matchers and engine.guided.num_compiling == 0 and engine.scheduler.num_guided == 0


def test_a_grammar_that_fails_to_compile_ends_only_its_request(llm, monkeypatch):
    engine = llm.engine

    def fail(grammar):
        raise MemoryError("no room")
    monkeypatch.setattr(engine.guided, "_compile", fail)
    engine.add_request("bad", [5, 6, 7], SamplingParams(max_tokens=8, json_schema=json.dumps(SCHEMA)))
    engine.add_request("ok", [5, 6, 7], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
    outs: dict = {}
    _drain(engine, outs)
    bad = outs["bad"][-1]
    assert bad.finish_reason == "error" and "did not compile (MemoryError: no room)" in bad.error
    assert outs["ok"][-1].finish_reason == "length" and not engine.guided._matchers


def test_masks_filled_side_by_side_equal_those_filled_one_by_one(llm):
    from types import SimpleNamespace

    from tierlm.engine.guided import GuidedDecoding

    engine = llm.engine
    texts = ['{"ok": true, "color": "', '{"ok": ', "", '{"ok": false, "color": "red", "n": 3'] * 3
    masked = []
    for threads in (0, 2):
        guided = GuidedDecoding(engine.tokenizer, engine.model_config.vocab_size, engine.eos_ids, engine.device,
                                fill_threads=threads)
        guided.fill.min_batch_s = 0.0  # side by side whatever the rows' cost (this vocabulary's fills are quick)
        reqs = [SimpleNamespace(request_id=str(i), guided=False,
                                params=SamplingParams(json_schema=json.dumps(SCHEMA))) for i in range(len(texts))]
        reqs.insert(1, SimpleNamespace(request_id="free", guided=False))
        for r in reqs[:1] + reqs[2:]:
            assert guided.expect(r) is False
        while guided.num_compiling:
            assert all(error is None for _, error in guided.compiled(timeout=1.0))
        for r, text in zip(reqs[:1] + reqs[2:], texts):
            for tok in engine.tokenizer.encode(text, add_special_tokens=False):
                assert guided.accept(r, tok) is None
        logits = torch.zeros(len(reqs), engine.model_config.vocab_size)
        guided.fill.row_s = 1.0
        guided.masker(reqs)(logits)
        assert guided.fill.side_by_side == (threads > 0)
        guided.close()
        masked.append(logits)
    assert torch.equal(masked[0], masked[1]) and not masked[0][1].isinf().any()  # the free row is left alone
    assert all(0 < masked[0][i].isfinite().sum() < masked[0].shape[1] for i in (0, 2, 3, 4))  # 12 guided rows
    assert not torch.equal(masked[0][0], masked[0][2])
