"""Request priority through the offline API: `--schedule-policy priority` admits lower values first."""
from __future__ import annotations

import pytest

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams

PROMPTS = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]
PARAMS = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True, detokenize=False)


@pytest.fixture(scope="module")
def llms(tiny_qwen3):
    made = {policy: LLM(str(tiny_qwen3), **CPU_OPTS, max_running_requests=1, schedule_policy=policy)
            for policy in ("fcfs", "priority")}
    yield made
    for llm in made.values():
        llm.close()


def first_token_order(outs) -> list[int]:
    return sorted(range(len(outs)), key=lambda i: outs[i].ttft)


def test_one_at_a_time_in_priority_order(llms):
    outs = llms["priority"].generate(PROMPTS, PARAMS, priority=[2, 0, 1])
    assert first_token_order(outs) == [1, 2, 0]
    ref = llms["fcfs"].generate(PROMPTS, PARAMS, priority=[2, 0, 1])
    assert first_token_order(ref) == [0, 1, 2]  # fcfs ignores priorities
    assert [o.token_ids for o in outs] == [o.token_ids for o in ref]


def test_priority_in_sampling_params(llms):
    params = [SamplingParams(temperature=0, max_tokens=3, ignore_eos=True, detokenize=False, priority=p)
              for p in (5, -1, 5)]
    assert first_token_order(llms["priority"].generate(PROMPTS, params)) == [1, 0, 2]


def test_bad_priorities(llms):
    out = llms["priority"].generate(PROMPTS[:1], PARAMS, priority=[True])[0]
    assert out.finish_reason == "error" and "priority" in out.error
    with pytest.raises(ValueError, match="2 priorities for 3 prompts"):
        llms["priority"].generate(PROMPTS, PARAMS, priority=[1, 2])
