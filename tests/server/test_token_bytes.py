"""`TokenBytes`: a token's own bytes, which join into the text's UTF-8 where one character spans several tokens
(byte-level BPE and SentencePiece byte fallback), and its decoded text for other tokenizers and added tokens."""
from __future__ import annotations

import pytest

from tierlm.server.token_bytes import TokenBytes, byte_level_chars, decoder_kind

TEXTS = ["plain words", "naïve café", "你好，世界", "emoji 🙂 and 🇫🇷", "mixed 語 e\u0301 \u2028 end",
         "\x00\x7f tabs\t"]


@pytest.fixture(scope="module")
def byte_level():
    from tierlm.utils.tiny_model import build_tokenizer

    return build_tokenizer()


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _byte_fallback_tokenizer():
    """A SentencePiece-style BPE as Llama 2 ships it: `▁` for spaces, `<0xHH>` entries for any byte the vocabulary
    lacks, and a decoder that replaces, falls back to bytes, fuses and strips the leading space."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece in ["▁", "h", "i", "o", "▁hi", "▁ho", "é"]:
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_the_byte_level_alphabet_is_the_tokenizers_one():
    from tokenizers import pre_tokenizers

    chars = byte_level_chars()
    assert sorted(chars) == list(range(256)) and len(set(chars.values())) == 256
    assert set(chars.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert chars[ord(" ")] == "Ġ" and chars[ord("a")] == "a" and chars[0x80] == chr(256 + 34)


def test_byte_level_tokens_join_into_the_texts_utf8(byte_level):
    token_bytes = TokenBytes(byte_level)
    assert decoder_kind(byte_level) == "byte_level"
    for text in TEXTS:
        ids = byte_level.encode(text, add_special_tokens=False)
        assert b"".join(token_bytes(i) for i in ids) == text.encode("utf-8"), text
    partial = [i for i in range(len(byte_level)) if "\ufffd" in byte_level.decode([i])]
    assert partial and all(not _is_utf8(token_bytes(i)) for i in partial)  # the bytes, not U+FFFD's UTF-8
    for i in range(len(byte_level)):  # every entry: its bytes read back as its decoded text
        assert token_bytes(i).decode("utf-8", errors="replace") == byte_level.decode([i]), i


def test_added_tokens_are_their_text(byte_level):
    token_bytes = TokenBytes(byte_level)
    for text, i in byte_level.get_added_vocab().items():
        assert token_bytes(i) == text.encode("utf-8")


def test_byte_fallback_tokens_join_into_the_texts_utf8():
    tok = _byte_fallback_tokenizer()
    token_bytes = TokenBytes(tok)
    assert decoder_kind(tok) == "byte_fallback+space"
    for text in ["hi ho", "hi 🙂 é 你"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert b"".join(token_bytes(i) for i in ids) == (" " + text).encode("utf-8"), text  # the prepended ▁
    assert token_bytes(tok.convert_tokens_to_ids("<0xF0>")) == b"\xf0"
    assert token_bytes(tok.convert_tokens_to_ids("▁hi")) == b" hi"


def test_other_tokenizers_give_the_decoded_text():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "caf": 1, "##é": 2, "hello": 3}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    wordpiece = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    token_bytes = TokenBytes(wordpiece)
    assert decoder_kind(wordpiece) == "text"
    assert [token_bytes(i) for i in range(4)] == [wordpiece.decode([i]).encode("utf-8") for i in range(4)]

    class Plain:  # no fast backend at all (a slow tokenizer, a test double)
        def decode(self, ids, skip_special_tokens=False):
            return "ü" * len(ids)

    assert decoder_kind(Plain()) == "text" and TokenBytes(Plain())(7) == "ü".encode("utf-8")


def test_a_decoder_with_metaspace_counts_the_word_boundary_as_a_space():
    from tokenizers import decoders

    class Fake:
        class backend_tokenizer:  # noqa: N801 - the attribute name transformers uses
            decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])

    assert decoder_kind(Fake()) == "byte_fallback+space"
    Fake.backend_tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    assert decoder_kind(Fake()) == "byte_fallback"
