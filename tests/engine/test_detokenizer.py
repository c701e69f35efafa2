"""`IncrementalDetokenizer` streams the text that decoding all outputs at once gives, through the fast
tokenizer's own decoder (and its incremental decoder) where the transformers class keeps the base decoding,
and holds back stop strings."""
from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tierlm.engine.detokenizer import EXACT_HOLD_CHARS, IncrementalDetokenizer, text_decoder

TEXT = "héllo wörld ✓ 你好 🙂 plain ascii, numbers 12345."  # multi-byte characters split across tokens


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen3):
    return AutoTokenizer.from_pretrained(tiny_qwen3)


@pytest.fixture(scope="module")
def sentencepiece_like():
    """A Llama-2-style tokenizer: BPE with byte fallback, spaces as "▁", the first one stripped on decoding."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    t = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)])
    t.train_from_iterator([TEXT, "the quick brown fox jumps over the lazy dog"] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=[f"<0x{i:02X}>" for i in range(256)]))
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _stream(tokenizer, prompt, outputs, stop=(), skip=True, include=False, unchecked=0):
    """The text a stream shows and the stop string hit; the first `unchecked` tokens match no stop string."""
    detok = IncrementalDetokenizer(tokenizer, prompt, stop, skip, include)
    pieces, hit = [], None
    for i, tok in enumerate(outputs):
        hit = detok.add(tok, check_stop=i >= unchecked)
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
    for trial in range(30):
        prompt = tokenizer.encode(TEXT[:rng.randint(1, 20)])
        outputs = tokenizer.encode(TEXT[rng.randint(0, 10):]) if trial % 2 else \
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


@pytest.mark.parametrize("stop", [["ne", "o"], ["o", "ne"], ["wo", "tw"], ["e", "on", "x"]])
def test_the_earliest_stop_string_ends_the_text_whatever_their_order(tokenizer, stop):
    """A piece can hold several stop strings: the text ends before the first to occur, so it holds none."""
    tokens = [tokenizer.encode(w)[0] for w in (" one", " two")]
    assert tokenizer.decode(tokens) == " one two"
    got, hit = _stream(tokenizer, tokenizer.encode("count:"), tokens, stop=stop)
    first = min((s for s in stop if s in " one two"), key=" one two".find)
    assert hit == first and got == " one two"[:" one two".find(first)]
    assert not any(s in got for s in stop)


@pytest.mark.parametrize("stop", [["ne", "o"], ["o", "ne"], ["wo", "tw"], ["e", "on", "x"], [" two", "one t"]])
def test_with_include_the_first_stop_string_to_end_ends_the_text(tokenizer, stop):
    """`include_stop_str_in_output`: the text ends with the stop string that completes first, and with nothing
    after it from the same piece."""
    tokens = [tokenizer.encode(w)[0] for w in (" one", " two")]
    text = " one two"
    got, hit = _stream(tokenizer, tokenizer.encode("count:"), tokens, stop=stop, include=True)
    first = min((s for s in stop if s in text), key=lambda s: text.find(s) + len(s))
    assert hit == first and got == text[:text.find(first) + len(first)] and got.endswith(first)


def test_unchecked_tokens_match_no_stop_string_but_one_may_end_after_them(tokenizer):
    """A request under its `min_tokens`: a stop string wholly in its first tokens' text does not end it; one that
    ends in a later token's text does, even where it began earlier (as vLLM matches it)."""
    words = [" one", " two", " three", " four"]
    tokens = [tokenizer.encode(w)[0] for w in words]
    assert tokenizer.decode(tokens) == "".join(words)
    prompt = tokenizer.encode("count:")
    got, hit = _stream(tokenizer, prompt, tokens, stop=["one"], unchecked=2)
    assert hit is None and got == " one two three four"
    got, hit = _stream(tokenizer, prompt, tokens, stop=["one", "e"], unchecked=2)
    assert hit == "e" and got == " one two thr"
    got, hit = _stream(tokenizer, prompt, tokens, stop=["o th"], unchecked=2)  # begins in " two", ends after
    assert hit == "o th" and got == " one tw"
    got, hit = _stream(tokenizer, prompt, tokens, stop=["o th"], unchecked=2, include=True)
    assert hit == "o th" and got == " one two th"


def _pieces(detok, outputs, switch_at=None):
    """What a stream shows after each token (the stop string hit last); `switch_at`: from that token on the
    Python decoding takes over, as after the Rust decoder refuses a token."""
    shown = []
    for i, tok in enumerate(outputs):
        if i == switch_at:
            detok._stream = None
        hit = detok.add(tok)
        shown.append(detok.delta(final=hit is not None))
        if hit is not None:
            return shown + [hit]
    return shown + [detok.delta(final=True)]


@pytest.mark.parametrize("which", ["tokenizer", "sentencepiece_like"])
def test_the_rust_stream_shows_what_the_python_decoding_shows(which, request):
    """Token by token, not only in sum: the same pieces, with special tokens, ids past the vocabulary (a model's
    padded head can sample them), split characters, stop strings, and a switch to Python half-way."""
    tok = request.getfixturevalue(which)
    rng = random.Random(2)
    special = sorted(tok.all_special_ids)
    for trial in range(150):
        skip, stop = trial % 2 == 0, ["ld", "🙂"] if trial % 4 == 0 else []
        prompt = tok.encode(TEXT[:rng.randint(1, 20)])
        outputs = tok.encode(TEXT[rng.randint(0, 10):]) if trial % 2 else \
            [rng.randrange(len(tok) + 50) for _ in range(rng.randint(1, 40))]
        outputs += [rng.choice(special)] if trial % 3 == 0 else []
        rust = IncrementalDetokenizer(tok, prompt, stop, skip)
        assert rust._stream is not None, "a fast tokenizer streams through its Rust decoder"
        python = IncrementalDetokenizer(tok, prompt, stop, skip)
        python._stream = None
        switched = IncrementalDetokenizer(tok, prompt, stop, skip)
        expected = _pieces(python, outputs)
        assert _pieces(rust, outputs) == expected, trial
        assert _pieces(switched, outputs, switch_at=rng.randint(0, len(outputs))) == expected, trial


def test_random_prompts_and_outputs_show_the_same_pieces(tokenizer):
    """Prompts of random ids too: one whose text ends in an unfinished character (cut mid-character) would
    have that character's replacement counted as new text by the Rust decoder, so it decodes in Python."""
    rng = random.Random(4)
    special = sorted(tokenizer.all_special_ids)
    started_in_python = 0
    for trial in range(300):
        skip, stop = rng.random() < 0.5, rng.choice([[], ["a"], ["ing", "\ufffd"]])

        def pick():
            return rng.choice(special) if rng.random() < 0.2 else rng.randrange(len(tokenizer) + 20)

        prompt, outputs = [pick() for _ in range(rng.randint(0, 8))], [pick() for _ in range(rng.randint(1, 30))]
        rust = IncrementalDetokenizer(tokenizer, prompt, stop, skip)
        started_in_python += rust._stream is None
        python = IncrementalDetokenizer(tokenizer, prompt, stop, skip)
        python._stream = None
        assert _pieces(rust, outputs) == _pieces(python, outputs), trial
    assert started_in_python > 0


def test_a_refused_token_is_decoded_in_python(tokenizer):
    class Refusing:
        def step(self, backend, token_id):
            raise Exception("Invalid prefix encountered")

    outputs = tokenizer.encode(" one two three")
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode("count:"), [], True)
    detok.add(outputs[0])
    detok._stream = Refusing()
    assert "".join(_pieces(detok, outputs[1:])) == " one two three"  # the first token's text not shown yet
    assert detok._stream is None


def test_a_class_with_its_own_decoding_streams_in_python(tokenizer):
    class Shouting(type(tokenizer)):
        def _decode(self, token_ids, **kwargs):
            return super()._decode(token_ids, **kwargs).upper()

    loud = Shouting.__new__(Shouting)
    loud.__dict__.update(tokenizer.__dict__)
    detok = IncrementalDetokenizer(loud, tokenizer.encode("say:"), [], True)
    assert detok._stream is None
    assert "".join(_pieces(detok, tokenizer.encode(" quiet words"))) == " QUIET WORDS"


def test_returned_text_is_dropped(tokenizer):
    """Only text not yet returned is kept (a long answer would otherwise copy all of its text on every token),
    and a stop string is still found where it spans returned text and text kept back."""
    outputs = tokenizer.encode(TEXT * 20)
    whole = tokenizer.decode(outputs)
    for stop in ["12345.", "wörld ✓ 你", "🙂 plain", "héllo wörld ✓ 你好 🙂 plain ascii, numbers 12345.h",
                 "s"]:
        for n in range(1, len(outputs), 5):
            detok = IncrementalDetokenizer(tokenizer, [], [stop], True)
            shown, hit = [], None
            for tok in outputs[:n]:
                hit = detok.add(tok)
                shown.append(detok.delta(final=hit is not None))
                if hit is not None:
                    break
                assert len(detok.text) <= len(stop) - 1, "more kept back than a stop string could need"
            text, upto = "".join(shown), tokenizer.decode(outputs[:n]).rstrip("\ufffd")  # a split character waits
            if hit is not None:
                assert text == whole[:whole.index(stop)], (stop, n)
            else:
                assert stop not in upto and upto.startswith(text) and len(upto) - len(text) < len(stop), (stop, n)


def test_a_stream_keeps_back_only_what_begins_a_stop_string(tokenizer):
    """Text is shown as soon as no stop string can begin in it: only the longest end of the text that begins
    some stop string waits (not every stop string's length less one)."""
    tokens = [tokenizer.encode(w)[0] for w in (" one", " two", " three")]
    assert tokenizer.decode(tokens) == " one two three"
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode("count:"), [" three!", "xyz"], True)
    assert _pieces(detok, tokens) == [" one", " two", "", " three"]  # " three" could begin " three!"
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode("count:"), ["e tx"], True)
    assert _pieces(detok, tokens) == [" on", "e two", " thre", "e"]


def _brute_held(text, stop):
    return max([k for s in stop for k in range(1, min(len(s) - 1, len(text)) + 1) if s.startswith(text[-k:])],
               default=0)


def test_what_is_kept_back_is_the_longest_end_that_begins_a_stop_string(tokenizer):
    rng = random.Random(7)
    for trial in range(2000):
        stop = ["".join(rng.choice("ab ") for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 3))]
        detok = IncrementalDetokenizer(tokenizer, [], stop, True)
        assert detok._exact_hold
        detok.text = "".join(rng.choice("ab ") for _ in range(rng.randint(0, 8)))
        assert detok._stop_prefix_len() == _brute_held(detok.text, stop), (trial, detok.text, stop)


def test_stop_strings_past_the_exact_bound_keep_the_longest_ones_length_less_one(tokenizer):
    """Past `EXACT_HOLD_CHARS` the exact check would cost up to a comparison per character of the stop strings
    on every token (an attacker's "aaaa...b" against "aaaa...": every position a candidate): such stop strings
    keep back the longest one's length less one."""
    stop = ["a" * 30 + "b", "a" * 30 + "c", "z" * 6]
    assert sum(len(s) - 1 for s in stop) > EXACT_HOLD_CHARS
    detok = IncrementalDetokenizer(tokenizer, [], stop, True)
    detok.text = "xyz" * 20
    assert detok._stop_prefix_len() == 30
    assert detok.delta(final=False) == ("xyz" * 20)[:-30]


def test_without_a_stream_that_takes_a_context_the_python_decoding_runs(tokenizer, monkeypatch):
    """tokenizers before 0.22 has no `DecodeStream(ids=...)`: the detokenizer decodes in Python there."""
    import tokenizers.decoders

    class Old:
        def __init__(self, skip_special_tokens=False):
            pass

    monkeypatch.setattr(tokenizers.decoders, "DecodeStream", Old)
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode("say:"), [], True)
    assert detok._stream is None
    assert "".join(_pieces(detok, tokenizer.encode(" héllo wörld"))) == " héllo wörld"
