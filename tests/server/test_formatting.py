"""`formatting.TokenChunks` writes a streamed token's SSE event byte for byte as `sse` of the whole chunk does;
legacy top logprobs whose texts collide keep the likeliest."""
from __future__ import annotations

import json
import random

import pytest

from tierlm.engine.outputs import TokenLogprob
from tierlm.server import formatting as fmt

ALPHABET = "aZ09 \t\n\r\"\\/'<>&é你🙂\u2028\u2029\x00\x1f\x7f\u0085"


@pytest.mark.parametrize("chat", [False, True])
def test_token_chunks_equal_the_encoded_chunk(chat):
    rng = random.Random(0)
    for trial in range(300):
        model = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
        head = {"id": f"cmpl-{trial}", "object": "chat.completion.chunk" if chat else "text_completion",
                "created": rng.randint(0, 2**40), "model": model}
        chunks = fmt.TokenChunks(head, chat)
        index = rng.randint(0, 300)
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 20)))
        body = {"delta": {"content": text}} if chat else {"text": text}
        expected = fmt.sse({**head, "choices": [{"index": index, **body, "logprobs": None, "finish_reason": None}]})
        assert chunks(index, text) == expected, (trial, text, model)
        assert json.loads(chunks(index, text)[6:])["choices"][0] == {"index": index, **body, "logprobs": None,
                                                                     "finish_reason": None}


def test_legacy_top_logprobs_with_equal_texts_keep_the_likeliest():
    class Bytes:  # ids 1-3 are lone bytes, which decode alone to U+FFFD
        def decode(self, ids, skip_special_tokens=False):
            return "\ufffd" if ids[0] in (1, 2, 3) else f"t{ids[0]}"

    lp = TokenLogprob(token_id=2, logprob=-0.5, top=[(2, -0.5), (7, -0.9), (1, -1.5), (3, -2.0)])
    out = fmt.completion_logprobs(Bytes(), [lp])
    assert out["tokens"] == ["\ufffd"] and out["token_logprobs"] == [-0.5]
    assert out["top_logprobs"] == [{"\ufffd": -0.5, "t7": -0.9}]
