"""`PromptEncoder`: the start-up warm-up tokenizes and renders the chat template once, and survives failing."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tierlm.server.prompt_encoder import PromptEncoder


class FakeTokenizer:
    """A slow tokenizer (no `backend_tokenizer`) that records its calls."""

    def __init__(self, chat_template: Any = "{{ messages }}", fail: bool = False):
        self.chat_template = chat_template
        self.fail = fail
        self.calls: list[str] = []

    def get_vocab(self) -> dict[str, int]:
        return {"a": 0, "bb": 1}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self.calls.append("encode")
        if self.fail:
            raise ValueError("this tokenizer refuses the warm-up's text")
        return [0] * len(text)

    def apply_chat_template(self, messages: list[dict], tokenize: bool, add_generation_prompt: bool) -> str:
        self.calls.append("template")
        self.rendered = (messages, tokenize, add_generation_prompt)
        if self.fail:
            raise ValueError("this template needs a system message")
        return "rendered"


@pytest.mark.parametrize("template, calls", [("{{ messages }}", ["encode", "template"]), (None, ["encode"])])
def test_warm_up_encodes_and_renders_the_template_once(template: Any, calls: list[str]) -> None:
    tok = FakeTokenizer(template)
    asyncio.run(PromptEncoder(tok, max_model_len=64).warm_up())
    assert tok.calls == calls
    if template:  # one user message, rendered as text with the generation prompt, as a chat request renders it
        assert tok.rendered == ([{"role": "user", "content": "Hello"}], False, True)


def test_warm_up_leaves_failures_to_the_first_request() -> None:
    tok = FakeTokenizer(fail=True)
    enc = PromptEncoder(tok, max_model_len=64)
    asyncio.run(enc.warm_up())
    assert tok.calls == ["encode", "template"]
    tok.fail = False
    assert asyncio.run(enc.encode("abc", "prompt")) == [0, 0, 0]
