"""`PromptEncoder`: prompt text to token ids without ever blocking the event loop.

Two guards keep one request from stalling the others:
- Text longer than `max_model_len` times the longest token (in characters) cannot fit the context whatever it
  says, so it is refused (413) from its length alone, before any tokenization.
- Everything else is tokenized in a worker thread through the `tokenizers` batch call, which releases the
  GIL; when the prompt turns out longer than the context only its token count crosses back into Python.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Optional

from tierlm.errors import PromptTooLongError
from tierlm.validation import check_text, prompt_too_long


def longest_token_chars(tokenizer: Any) -> int:
    """Characters of the longest vocabulary entry: no token covers more characters of input text.

    (Byte-level vocabularies spell each byte as one character, so this bounds the bytes per token too.)
    """
    return max((len(t) for t in tokenizer.get_vocab()), default=1) or 1


def _backend(tokenizer: Any) -> Optional[Any]:
    """The `tokenizers.Tokenizer` behind a fast tokenizer, without truncation or padding (a private copy if it
    had either, so the shared one is never mutated while a worker thread reads it)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        return None
    if backend.truncation is not None or backend.padding is not None:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()
    return backend


class PromptEncoder:
    """Tokenizes prompts for one served model: length guard first, then tokenization off the event loop."""

    def __init__(self, tokenizer: Any, max_model_len: int):
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.max_token_chars = longest_token_chars(tokenizer)
        self.max_chars = max_model_len * self.max_token_chars
        self._backend = _backend(tokenizer)

    def check_length(self, num_chars: int, param: str) -> None:
        """413 for text of more characters than the context can hold."""
        if num_chars > self.max_chars:
            raise PromptTooLongError(
                f"{param} is {num_chars} characters long; this model's context of {self.max_model_len} tokens "
                f"holds at most {self.max_chars} characters ({self.max_token_chars} per token)", param)

    async def encode(self, text: str, param: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; 413 when it cannot fit the context, 400 when it is not valid Unicode."""
        self.check_length(len(text), param)
        check_text(text, param)
        n, ids = await asyncio.to_thread(self._encode, text, add_special_tokens)
        if ids is None:
            raise prompt_too_long(n, self.max_model_len, param)
        return ids

    async def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool,
                          template_kwargs: Optional[dict[str, Any]] = None, continue_final_message: bool = False,
                          tools: Optional[list[dict[str, Any]]] = None) -> str:
        """`messages` (and `tools`, OpenAI's function definitions) through the tokenizer's chat template, as text,
        in a worker thread; `template_kwargs` are the template's own extra variables. Arguments left at their
        defaults are not passed (a tokenizer with its own `apply_chat_template` may not take them)."""
        extra = dict(template_kwargs or {})
        if continue_final_message:
            extra["continue_final_message"] = True
        if tools:
            extra["tools"] = tools
        return await asyncio.to_thread(self.tokenizer.apply_chat_template, messages, tokenize=False,
                                       add_generation_prompt=add_generation_prompt, **extra)

    async def warm_up(self) -> None:
        """Tokenize a short text and render a one-message conversation through the chat template (if any) once,
        in the worker threads, so the first request pays neither the threads' start nor the template's compile.
        A failure is left to the first real request, which reports it (a template that needs a system message)."""
        with contextlib.suppress(Exception):
            await self.encode("Hello", "warm_up")
        if getattr(self.tokenizer, "chat_template", None):
            with contextlib.suppress(Exception):
                await self.render_chat([{"role": "user", "content": "Hello"}], add_generation_prompt=True)

    def _encode(self, text: str, add_special_tokens: bool) -> tuple[int, Optional[list[int]]]:
        if self._backend is not None:
            enc = self._backend.encode_batch([text], add_special_tokens=add_special_tokens)[0]
            n = len(enc)
            return n, (list(enc.ids) if n < self.max_model_len else None)
        ids = list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))
        return len(ids), (ids if len(ids) < self.max_model_len else None)
