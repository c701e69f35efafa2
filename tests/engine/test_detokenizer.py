"""`IncrementalDetokenizer` streams the text that decoding all outputs at once gives, through the fast
tokenizer's own decoder where the transformers class keeps the base decoding, and holds back stop strings."""
from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tierlm.engine.detokenizer import IncrementalDetokenizer, text_decoder


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen3):
    return AutoTokenizer.from_pretrained(tiny_qwen3)


def _stream(tokenizer, prompt, outputs, stop=(), skip=True):
    detok = IncrementalDetokenizer(tokenizer, prompt, stop, skip)
    pieces, hit = [], None
    for tok in outputs:
        hit = detok.add(tok)
        pieces.append(detok.delta(final=hit is not None))
        if hit is not None:
            break
    if hit is None:
        pieces.append(detok.delta(final=True))
    return "".join(pieces), hit


@pytest.mark.parametrize("skip", [True, False])
def test_the_stream_is_the_whole_decode(tokenizer, skip):
    rng = random.Random(0)
    special = sorted(tokenizer.all_special_ids)
    text = "héllo wörld ✓ 你好 🙂 plain ascii, numbers 12345."  # multi-byte characters split across tokens
    for trial in range(30):
        prompt = tokenizer.encode(text[:rng.randint(1, 20)])
        outputs = tokenizer.encode(text[rng.randint(0, 10):]) if trial % 2 else \
            [rng.randrange(len(tokenizer)) for _ in range(rng.randint(1, 40))]
        outputs += [rng.choice(special)] if trial % 3 == 0 else []
        got, _ = _stream(tokenizer, prompt, outputs, skip=skip)
        whole = tokenizer.decode(prompt[-5:] + outputs, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
        context = tokenizer.decode(prompt[-5:], skip_special_tokens=skip, clean_up_tokenization_spaces=False)
        if whole.endswith("\ufffd"):  # an unfinished last character is held back
            assert whole.startswith(context + got), (trial, got, whole)
        else:
            assert context + got == whole, (trial, got, whole)


def test_the_fast_decoder_equals_the_wrapper(tokenizer):
    decode = text_decoder(tokenizer)
    assert decode.__code__ is not text_decoder(object()).__code__, "a fast tokenizer decodes through its backend"
    rng = random.Random(1)
    for _ in range(50):
        ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randint(0, 30))]
        for skip in (True, False):
            assert decode(ids, skip) == tokenizer.decode(ids, skip_special_tokens=skip,
                                                         clean_up_tokenization_spaces=False)


def test_a_class_with_its_own_decoding_keeps_it(tokenizer):
    class Shouting(type(tokenizer)):
        def _decode(self, token_ids, **kwargs):
            return super()._decode(token_ids, **kwargs).upper()

    assert issubclass(Shouting, PreTrainedTokenizerFast)
    loud = Shouting.__new__(Shouting)
    loud.__dict__.update(tokenizer.__dict__)
    ids = tokenizer.encode("quiet words")
    assert text_decoder(loud)(ids, True) == "QUIET WORDS"


def test_a_stop_string_ends_the_text_before_it(tokenizer):
    outputs = tokenizer.encode(" one two STOP three")
    got, hit = _stream(tokenizer, tokenizer.encode("count:"), outputs, stop=["STOP"])
    assert hit == "STOP" and got == " one two "
