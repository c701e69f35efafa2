"""`IncrementalDetokenizer`: streams text from token ids, holding back incomplete UTF-8 and stop-string prefixes."""
from __future__ import annotations

from typing import Callable, Optional, Sequence


def text_decoder(tokenizer) -> Callable[[Sequence[int], bool], str]:
    """`decode(ids, skip_special_tokens)` of `tokenizer`, without clean-up of spaces. A transformers fast
    tokenizer whose class keeps the base class's decoding decodes through its Rust tokenizer directly, as that
    class would with no clean-up, without the wrapper's Python (a streamed token decodes twice, for every
    running request every step); any other tokenizer through its own `decode`."""
    from transformers import PreTrainedTokenizerFast

    cls, backend = type(tokenizer), getattr(tokenizer, "backend_tokenizer", None)
    if (backend is not None and isinstance(tokenizer, PreTrainedTokenizerFast)
            and cls.decode is PreTrainedTokenizerFast.decode and cls._decode is PreTrainedTokenizerFast._decode):
        return lambda ids, skip: backend.decode(ids, skip_special_tokens=skip)
    return lambda ids, skip: tokenizer.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False)


class IncrementalDetokenizer:
    """Decodes a growing list of output ids into text deltas.

    Byte-level BPE can split a character across tokens: text ending in U+FFFD is held back until the next
    token completes it. Text that could be the start of a stop string is held back too, so a stream never
    shows part of a stop string that later ends the request.
    """

    def __init__(self, tokenizer, prompt_ids: Sequence[int], stop: Sequence[str], skip_special_tokens: bool) -> None:
        self.tokenizer = tokenizer
        self._decode_ids = text_decoder(tokenizer)
        self.stop = list(stop)
        self.skip = skip_special_tokens
        context = list(prompt_ids[-5:])  # a little prompt context so leading-space rules decode right
        self.ids: list[int] = context
        self._prefix_off = 0
        self._read_off = len(context)
        self.text = ""  # complete decoded text so far (stable part)
        self.emitted = 0  # characters of `text` already returned
        self._hold = max((len(s) for s in self.stop), default=1) - 1

    def _decode(self, ids: Sequence[int]) -> str:
        return self._decode_ids(ids, self.skip)

    def add(self, token_id: int) -> Optional[str]:
        """Append one token; returns the stop string hit (text is truncated before it), else None."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self._prefix_off:self._read_off])
        full = self._decode(self.ids[self._prefix_off:])
        if full.endswith("\ufffd") or len(full) <= len(prefix):
            return None
        start = max(0, len(self.text) - self._hold)
        self.text += full[len(prefix):]
        self._prefix_off, self._read_off = self._read_off, len(self.ids)
        for s in self.stop:
            pos = self.text.find(s, start)
            if pos != -1:
                self.text = self.text[:pos]
                return s
        return None

    def delta(self, final: bool) -> str:
        """Text not yet returned; while running, keeps back what could still become a stop string."""
        end = len(self.text) if final or not self.stop else max(self.emitted, len(self.text) - self._hold)
        out = self.text[self.emitted:end]
        self.emitted = end
        return out
