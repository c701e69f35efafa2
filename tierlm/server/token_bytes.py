"""`TokenBytes`: the raw bytes of one vocabulary entry, for the `bytes` field of OpenAI chat logprobs.

The field exists so that a client can join the bytes of consecutive tokens into text where one character spans
several tokens. A byte-level BPE entry (GPT-2, Llama 3, Qwen) or a byte-fallback entry (`<0xF0>`, SentencePiece
models) may hold only part of a UTF-8 character; decoding it alone gives U+FFFD, whose own UTF-8 (239, 191, 189)
would say nothing of the bytes the model produced. So the bytes come from the vocabulary entry itself, read
through the tokenizer's decoder kind: byte-level entries map their characters back to bytes, `<0xHH>` entries
are that byte, and every other entry (and any tokenizer of another kind, or added tokens such as `<|im_end|>`)
is its decoded text in UTF-8.
"""
from __future__ import annotations

import json
import re
from typing import Any

_HEX_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_METASPACE = "\u2581"  # SentencePiece's word boundary, a space in the text


def byte_level_chars() -> dict[int, str]:
    """The byte-level BPE alphabet (GPT-2's): each byte as the printable character its vocabulary entries use.
    Printable Latin-1 bytes stand for themselves; the other 68 take the code points from 256 on, in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = {b: chr(b) for b in kept}
    moved = [b for b in range(256) if b not in chars]
    chars.update({b: chr(256 + i) for i, b in enumerate(moved)})
    return chars


def decoder_kind(tokenizer: Any) -> str:
    """The kind of a fast tokenizer's decoder: "byte_level", "byte_fallback" (with "+space" where `\u2581` stands
    for a space) or "text", also for anything that does not say (a slow tokenizer, a test double)."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    try:
        spec = json.loads(decoder.__getstate__())
    except Exception:  # no decoder, or one that does not serialize: decode entries as text
        return "text"
    parts = (spec.get("decoders") or [spec]) if isinstance(spec, dict) else []
    kinds = {p.get("type") for p in parts if isinstance(p, dict)}
    if "ByteLevel" in kinds:
        return "byte_level"
    if "ByteFallback" in kinds:
        space = "Metaspace" in kinds or any(p.get("type") == "Replace" and p.get("pattern", {}).get("String")
                                            == _METASPACE for p in parts if isinstance(p, dict))
        return "byte_fallback+space" if space else "byte_fallback"
    return "text"


class TokenBytes:
    """Token id -> the bytes the model produced with it (see the module's docstring); one per tokenizer. Answers
    are kept per id, so the cache is bounded by the vocabulary."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._kind = decoder_kind(tokenizer)
        self._from_char = {c: b for b, c in byte_level_chars().items()} if self._kind == "byte_level" else {}
        try:
            self._added = set(tokenizer.get_added_vocab().values())
        except Exception:  # a tokenizer without added tokens to report
            self._added = set()
        self._known: dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        got = self._known.get(token_id)
        if got is None:
            got = self._known[token_id] = self._bytes(token_id)
        return got

    def _text(self, token_id: int) -> bytes:
        return self._tokenizer.decode([token_id], skip_special_tokens=False).encode("utf-8")

    def _bytes(self, token_id: int) -> bytes:
        if self._kind == "text" or token_id in self._added:
            return self._text(token_id)
        entry = self._tokenizer.convert_ids_to_tokens(token_id)
        if not isinstance(entry, str):
            return self._text(token_id)
        if self._kind == "byte_level":
            raw = [self._from_char.get(c) for c in entry]
            return bytes(raw) if None not in raw else self._text(token_id)
        hex_byte = _HEX_BYTE.fullmatch(entry)
        if hex_byte:
            return bytes([int(hex_byte.group(1), 16)])
        return (entry.replace(_METASPACE, " ") if self._kind.endswith("+space") else entry).encode("utf-8")
