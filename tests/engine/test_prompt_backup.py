"""Under write_through a request's prompt pages are cached and backed up while it decodes, not at its release:
the engine path, with outputs identical to an engine without tiers."""
from __future__ import annotations

import pytest

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams

PROMPT = list(range(3, 3 + 37))  # nine whole pages of 4 and one token
PARAMS = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, detokenize=False)


def _backed_up_while_decoding(llm: LLM) -> tuple[list[int], list[int]]:
    """(host pages backed up, tree pages) after each step, until the request finishes; and its tokens."""
    engine = llm.engine
    engine.add_request("r", list(PROMPT), PARAMS)
    seen, tokens = [], []
    while engine.has_unfinished():
        for out in engine.step():
            tokens.extend(out.new_token_ids)
            if out.finished:
                return seen, tokens
        seen.append(engine.stats()["tiers"]["backups"]["pages"] if engine.kv.tiers else 0)
    return seen, tokens


@pytest.mark.parametrize("policy", ["write_through", "write_back"])
def test_prompt_pages_are_backed_up_before_the_request_ends(tiny_qwen3, policy):
    ref = LLM(str(tiny_qwen3), **CPU_OPTS, enable_prefix_cache=False)
    _, want = _backed_up_while_decoding(ref)
    llm = LLM(str(tiny_qwen3), **CPU_OPTS, enable_hicache=True, hicache_write_policy=policy)
    seen, got = _backed_up_while_decoding(llm)
    assert got == want and len(got) == PARAMS.max_tokens
    if policy == "write_through":  # the nine prompt pages, long before the last token
        assert seen[len(seen) // 2] == 9 and llm.engine.kv.radix.match_length(PROMPT) == 9
    else:  # write_back: nothing is copied while the device keeps the pages
        assert seen[-1] == 0
    llm.engine.kv.check_no_leak(llm.engine.live_pages())
    # the next request with this prompt is served from the cache, the same tokens again
    _, again = _backed_up_while_decoding(llm)
    assert again == want
