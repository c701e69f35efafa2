"""`formatting.TokenChunks` writes a streamed token's SSE event byte for byte as `sse` of the whole chunk does."""
from __future__ import annotations

import json
import random

import pytest

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
