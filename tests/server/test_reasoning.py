"""`--reasoning-parser`: a thinking model's reasoning split from its answer, in whole texts and streams cut
anywhere (unit), and through /v1/chat/completions of a live server, streamed and not (the tiny model writes no
tags, so with `deepseek-r1`, whose answers begin with reasoning, its whole text is reasoning)."""
from __future__ import annotations

import json
import random

import httpx
import pytest

from tests.server.helpers import start_server
from tierlm.server.reasoning import ChatSplit, reasoning_parser

THOUGHT = "<think>\nsix times seven, carry the four\n</think>\n\nIt is 42."


@pytest.mark.parametrize("name, text, want", [
    ("qwen3", THOUGHT, ("\nsix times seven, carry the four\n", "It is 42.")),
    ("qwen3", "  <think>a</think>b", ("a", "b")),
    ("qwen3", "No thinking here.", ("", "No thinking here.")),
    ("qwen3", "<think>cut short", ("cut short", "")),
    ("qwen3", "<thi", ("", "<thi")),
    ("qwen3", "x <think>y</think>z", ("", "x <think>y</think>z")),
    ("deepseek-r1", THOUGHT, ("\nsix times seven, carry the four\n", "It is 42.")),
    ("deepseek_r1", "its template wrote <think>\n</think>\n\nok", ("its template wrote <think>\n", "ok")),
    ("deepseek-r1", "no end tag", ("no end tag", "")),
    ("deepseek-r1", "", ("", "")),
])
def test_split(name, text, want):
    assert reasoning_parser(name).split(text) == want


@pytest.mark.parametrize("name", ["qwen3", "deepseek-r1"])
def test_a_stream_cut_anywhere_joins_into_the_split(name):
    parser, rng = reasoning_parser(name), random.Random(0)
    texts = [THOUGHT, "  <think>a</think>b", "<think>abc</thi", "\n\n", "<think></think>", "plain</think>text"]
    for text in texts:
        for _ in range(40):
            cuts = sorted(rng.sample(range(len(text) + 1), k=min(4, len(text) + 1)))
            pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
            stream, got = parser.stream(), ["", ""]
            for piece in pieces:
                r, a = stream.feed(piece)
                got = [got[0] + r, got[1] + a]
            r, a = stream.finish()
            assert (got[0] + r, got[1] + a) == parser.split(text), (text, pieces)


def test_held_reasoning_comes_in_one_piece_once_it_is_over():
    split = ChatSplit(reasoning_parser("qwen3"), live=False)
    pieces = [split.feed(t, False) for t in ("<think>one ", "two ", "three</think>", "\n\nfour")]
    assert pieces == [("", ""), ("", ""), ("one two three", ""), ("", "four")]
    live = ChatSplit(reasoning_parser("qwen3"), live=True)
    assert [live.feed(t, False) for t in ("<think>one ", "two")] == [("one ", ""), ("two", "")]


@pytest.fixture(scope="module")
def server(tiny_qwen3, tmp_path_factory):
    srv = start_server(tiny_qwen3, tmp_path_factory.mktemp("reasoning"), "--reasoning-parser", "deepseek-r1")
    yield srv
    assert srv.stop() == 0, srv.log_text()


MESSAGES = [{"role": "user", "content": "What is six times seven?"}]


def _chat(server, **extra):
    body = {"model": server.model, "messages": MESSAGES, "max_tokens": 12, "temperature": 0, "ignore_eos": True,
            **extra}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]


def _stream(server, **extra):
    body = {"model": server.model, "messages": MESSAGES, "max_tokens": 12, "temperature": 0, "ignore_eos": True,
            "stream": True, **extra}
    reasoning, content, pieces = "", "", 0
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    delta = choice["delta"]
                    pieces += bool(delta.get("reasoning_content"))
                    reasoning += delta.get("reasoning_content") or ""
                    content += delta.get("content") or ""
    return reasoning, content, pieces


def test_the_chat_routes_split_as_configured(server):
    whole = _chat(server, separate_reasoning=False)
    assert whole["reasoning_content"] is None and whole["content"]
    split = _chat(server)
    assert (split["reasoning_content"], split["content"]) == (whole["content"], "")
    reasoning, content, pieces = _stream(server)
    assert (reasoning, content) == (whole["content"], "") and pieces >= 1  # one per token unless merged
    reasoning, content, pieces = _stream(server, stream_reasoning=False)
    assert (reasoning, content, pieces) == (whole["content"], "", 1)
    assert _stream(server, separate_reasoning=False)[:2] == ("", whole["content"])
