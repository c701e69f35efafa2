"""`PrefillTimer`: only prefill steps that load nothing are timed (a step waiting for loads is not compute),
the first one (first-use work) is not reported, and the engine feeds its cost model from it."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.engine.prefill_timer import PrefillTimer


def plan(mode="prefill", tokens=8, loads=()):
    return SimpleNamespace(mode=mode, has_forward=True, num_tokens=tokens, load_host=list(loads))


def test_times_prefills_without_loads_after_the_first():
    seen = []
    timer = PrefillTimer(torch.device("cpu"), lambda t, s: seen.append((t, s)))
    for p in (plan(tokens=1), plan(tokens=5), plan("decode"), plan(tokens=6, loads=[3]), plan(tokens=7)):
        with timer.measure(p):
            pass
    assert [t for t, _ in seen] == [5, 7] and all(s >= 0 for _, s in seen)


def test_engine_measures_its_prefill_rate(tiny_qwen3):
    llm = LLM(str(tiny_qwen3), **CPU_OPTS, enable_hicache=True)
    for prompt in ("the quick brown fox", "hello world this is"):  # two prefill steps
        llm.generate([prompt], SamplingParams(max_tokens=2))
    cost = llm.engine.stats()["tiers"]["cost"]
    assert cost["policy"] == "always-load"  # "auto" on CPU: copies are synchronous
    assert cost["prefill_samples"] > 0 and cost["prefill_tokens_per_s"] != 1e3
    llm.close()

