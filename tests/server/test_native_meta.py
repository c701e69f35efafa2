"""SGLang's `meta_info` pieces (`server.native_meta`): the finish reason of every kind, and logprob triples."""
from __future__ import annotations

from tierlm.engine.outputs import TokenLogprob
from tierlm.server.native_meta import finish_info, meta_info, triples


class Letters:
    """A tokenizer whose token i decodes to the i-th letter."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(ord("a") + i) for i in ids)


def test_finish_reasons():
    assert finish_info(None, None, 5, 3) is None  # still running
    assert finish_info("stop", None, 7, 3) == {"type": "stop", "matched": 7}  # end of sequence: its id
    assert finish_info("stop", "END", 7, 3) == {"type": "stop", "matched": "END"}  # a stop string
    assert finish_info("stop", 9, 9, 3) == {"type": "stop", "matched": 9}  # a stop token id
    assert finish_info("length", None, 7, 3) == {"type": "length", "length": 3}
    assert finish_info("abort", None, None, 0, "engine gone") == {"type": "abort", "message": "engine gone"}
    assert finish_info("error", None, None, 0) == {"type": "abort", "message": "error"}


def test_triples_with_and_without_text_and_tops():
    lps = [None, TokenLogprob(2, -0.5, [(2, -0.5), (4, -1.5), (1, -3.0)]), TokenLogprob(3, -2.0, [(0, -0.1)])]
    tokens, tops = triples(Letters(), lps, 0, True, 2)
    assert tokens == [[None, 0, "a"], [-0.5, 2, "c"], [-2.0, 3, "d"]]
    assert tops == [None, [[-0.5, 2, "c"], [-1.5, 4, "e"]], [[-0.1, 0, "a"]]]
    tokens, tops = triples(Letters(), lps[1:], None, False, 0)
    assert tokens == [[-0.5, 2, None], [-2.0, 3, None]] and tops is None


def test_meta_info_counts_and_logprob_fields():
    result = {"finish_reason": "stop", "stop_reason": None, "ids": [4, 6], "prompt": 10, "output": 2, "cached": 4,
              "error": None}
    got = meta_info("r1", result, 0.25, {"output_token_logprobs": []})
    assert got == {"id": "r1", "finish_reason": {"type": "stop", "matched": 6}, "prompt_tokens": 10,
                   "completion_tokens": 2, "cached_tokens": 4, "e2e_latency": 0.25, "output_token_logprobs": []}
