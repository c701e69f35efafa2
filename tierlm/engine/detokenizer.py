"""`IncrementalDetokenizer`: streams text from token ids, holding back incomplete UTF-8 and stop-string prefixes."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

# a request's stop strings whose lengths less one add up to at most this are matched exactly against the text's
# end (a scan of up to that many candidate starts per delta, each a string comparison); with longer ones the
# longest one's length less one is kept back
EXACT_HOLD_CHARS = 64


def rust_tokenizer(tokenizer) -> Any:
    """The Rust tokenizer that decodes as `tokenizer` does with no clean-up of spaces, or None: a transformers
    fast tokenizer whose class keeps the base class's decoding has one (its `backend_tokenizer`); any other
    tokenizer decodes through its own Python."""
    from transformers import PreTrainedTokenizerFast

    cls, backend = type(tokenizer), getattr(tokenizer, "backend_tokenizer", None)
    if (backend is not None and isinstance(tokenizer, PreTrainedTokenizerFast)
            and cls.decode is PreTrainedTokenizerFast.decode and cls._decode is PreTrainedTokenizerFast._decode):
        return backend
    return None


def text_decoder(tokenizer) -> Callable[[Sequence[int], bool], str]:
    """`decode(ids, skip_special_tokens)` of `tokenizer`, without clean-up of spaces: through `rust_tokenizer`
    where there is one, without the wrapper's Python; otherwise through the tokenizer's own `decode`."""
    backend = rust_tokenizer(tokenizer)
    if backend is not None:
        return lambda ids, skip: backend.decode(ids, skip_special_tokens=skip)
    return lambda ids, skip: tokenizer.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False)


def rust_stream(context: list[int], skip: bool) -> Any:
    """The Rust tokenizer's own incremental decoder seeded with `context`, or None where this `tokenizers`
    has none that takes a context. It keeps the same two offsets as `IncrementalDetokenizer` and emits the
    same pieces, in one call per token instead of two decodes and their slicing in Python; except after a
    context whose text ends in an unfinished character, which it would count as new text (a prompt cut in
    the middle of a character): the caller decodes those requests in Python."""
    try:
        from tokenizers.decoders import DecodeStream

        return DecodeStream(ids=context, skip_special_tokens=skip)
    except (ImportError, TypeError):
        return None


class IncrementalDetokenizer:
    """Decodes a growing list of output ids into text deltas.

    Byte-level BPE can split a character across tokens: text ending in U+FFFD is held back until the next
    token completes it. Text that could be the start of a stop string is held back too, so a stream never
    shows part of a stop string that later ends the request: the longest end of the text that begins some stop
    string, no more (past `EXACT_HOLD_CHARS` of stop strings, the longest one's length less one: a bound that
    keeps the check cheap).

    Each token is decoded by the Rust tokenizer's incremental decoder where there is one (`rust_stream`); the
    offsets below follow it, so that if it refuses a token (its decoded window does not extend the last one)
    this token and every later one are decoded in Python from the same state.
    """

    def __init__(self, tokenizer, prompt_ids: Sequence[int], stop: Sequence[str], skip_special_tokens: bool,
                 include_stop: bool = False) -> None:
        self.tokenizer = tokenizer
        self._decode_ids = text_decoder(tokenizer)
        self.stop = list(stop)
        self.include_stop = include_stop  # a stop string that ends the text stays at its end
        self.skip = skip_special_tokens
        context = list(prompt_ids[-5:])  # a little prompt context so leading-space rules decode right
        self.ids: list[int] = context
        self._prefix_off = 0
        self._read_off = len(context)
        # decoded text not yet returned; while running it keeps at most the last `_hold` characters, those where a
        # stop string could still begin (returned text is dropped: a long answer would copy all of it on every token)
        self.text = ""
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self._exact_hold = sum(len(s) - 1 for s in self.stop) <= EXACT_HOLD_CHARS
        self._backend = rust_tokenizer(tokenizer)
        self._stream = None
        if self._backend is not None and not self._decode(context).endswith("\ufffd"):
            self._stream = rust_stream(context, skip_special_tokens)

    def _decode(self, ids: Sequence[int]) -> str:
        return self._decode_ids(ids, self.skip)

    def add(self, token_id: int, check_stop: bool = True) -> Optional[str]:
        """Append one token; returns the stop string hit (text is truncated before it, or after it with
        `include_stop`), else None. `check_stop` False: no stop string may end in this token's text (a request
        under its `min_tokens`); one that began in it may still end in a later token's."""
        self.ids.append(token_id)
        if self._stream is None:
            piece = self._python_piece()
        else:
            try:
                piece = self._stream.step(self._backend, token_id)
            except Exception:  # noqa: BLE001  (refused: the window's decode does not extend its prefix's)
                self._stream = None
                piece = self._python_piece()
        if piece is None:
            return None
        self._prefix_off, self._read_off = self._read_off, len(self.ids)
        before = len(self.text)
        self.text += piece
        if not self.stop or not check_stop:
            return None
        return self._end_at_stop(before)

    def _end_at_stop(self, before: int) -> Optional[str]:
        """Truncate `text` at the first stop string that ends after its first `before` characters (the new
        piece); returns it, or None. Without `include_stop` the first to begin wins, so the text keeps none of
        them whatever their order; with it, the first to end, which the text then ends with."""
        hit, at, end = None, len(self.text), len(self.text) + 1
        for s in self.stop:
            # a match that ends in the new piece and begins before the best so far (ends before, with include)
            limit = at + len(s) - 1 if not self.include_stop else end - 1
            pos = self.text.find(s, max(0, before - len(s) + 1), limit)
            if pos != -1:
                hit, at, end = s, pos, pos + len(s)
        if hit is not None:
            self.text = self.text[:end if self.include_stop else at]
        return hit

    def _python_piece(self) -> Optional[str]:
        """The text the last token of `ids` completes, or None while it completes nothing (two decodes)."""
        prefix = self._decode(self.ids[self._prefix_off:self._read_off])
        full = self._decode(self.ids[self._prefix_off:])
        if full.endswith("\ufffd") or len(full) <= len(prefix):
            return None
        return full[len(prefix):]

    def _stop_prefix_len(self) -> int:
        """Characters at the end of `text` that some stop string begins with (the most a stream must keep)."""
        text = self.text
        if not self._exact_hold:
            return min(self._hold, len(text))
        held = 0
        for s in self.stop:
            n = min(len(s) - 1, len(text))
            if n <= held:
                continue
            tail = text[len(text) - n:]
            at = tail.find(s[0])
            while at != -1 and n - at > held:  # the earliest start whose rest begins `s` is the longest end
                if s.startswith(tail[at:]):
                    held = n - at
                    break
                at = tail.find(s[0], at + 1)
        return held

    def delta(self, final: bool) -> str:
        """Text not yet returned; while running, keeps back what could still become a stop string."""
        end = len(self.text) if final or not self.stop else len(self.text) - self._stop_prefix_len()
        out, self.text = self.text[:end], self.text[end:]
        return out
