"""Mixed steps (decode tokens and prefill chunks in one extend pass) give the tokens separate steps give.

Requests arrive while others decode (one new request every other step), prompts share prefixes (prefix
cache on) and are prefilled in chunks; greedy outputs with `--enable-mixed-chunk` must equal those without,
for per-head (torch) and latent (torch MLA) attention, with and without overlap scheduling.
"""
from __future__ import annotations

from typing import Callable

import pytest

from tests.conftest import CPU_OPTS
from tierlm.engine.engine import Engine
from tierlm.config import EngineConfig
from tierlm.sampling_params import SamplingParams

PROMPTS = [
    [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17],
    [5, 6, 7, 8, 9, 10, 11, 12, 21, 22, 23],
    [30, 31, 32],
    [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 40, 41, 42, 43, 44, 45, 46, 47],
    [50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68],
    [30, 31, 32, 33, 34],
    [7],
]
GREEDY = SamplingParams(temperature=0, max_tokens=9, ignore_eos=True, detokenize=False)


def run_staggered(model_dir, every: int = 2, prompts: list[list[int]] = PROMPTS, rounds: int = 2,
                  params: SamplingParams = GREEDY, started: Callable[[], object] = lambda: None,
                  **opts) -> tuple[list[list[int]], list[str], int]:
    """Add one request every `every` steps (`rounds` times over: later rounds hit the prefix cache);
    return each request's tokens, the mode of every scheduled batch and the number of retractions. `started`
    is called once the engine has started (its warm-up done), before the first request."""
    engine = Engine(EngineConfig(model=str(model_dir), **{**CPU_OPTS, "max_prefill_tokens": 5, **opts}))
    started()
    modes: list[str] = []
    schedule = engine.scheduler.schedule

    def recording():
        batch, refused = schedule()
        if batch is not None:
            modes.append(batch.mode)
        return batch, refused

    engine.scheduler.schedule = recording
    queue = [(f"{rnd}-{i}", p) for rnd in range(rounds) for i, p in enumerate(prompts)]
    outs: dict[str, list[int]] = {rid: [] for rid, _ in queue}
    step = 0
    while queue or engine.has_unfinished():
        if queue and step % every == 0:
            engine.add_request(*queue.pop(0), params)
        for o in engine.step():
            assert o.error is None
            outs[o.request_id].extend(o.new_token_ids)
        step += 1
    engine.kv.check_no_leak(engine.live_pages())
    stats = engine.stats()
    assert stats["kv_used_tokens"] == 0
    engine.close()
    return list(outs.values()), modes, stats["retracted_total"]


@pytest.mark.parametrize("arch, overlap", [("qwen3", True), ("qwen3", False), ("llama", True),
                                            ("deepseek_v2", True)])
def test_mixed_steps_give_the_same_tokens(tiny_models, arch, overlap):
    ref, ref_modes, _ = run_staggered(tiny_models[arch], overlap_schedule=overlap)
    got, modes, _ = run_staggered(tiny_models[arch], overlap_schedule=overlap, enable_mixed_chunk=True,
                               max_mixed_tokens=7)
    assert "mixed" not in ref_modes
    assert modes.count("mixed") >= 5, modes
    assert got == ref
    assert all(len(t) == GREEDY.max_tokens for t in got)


def test_decodes_that_fill_the_budget_leave_prefill_a_step_of_its_own(tiny_qwen3):
    """With a budget no larger than the decodes, mixing cannot happen: steps are as without it."""
    ref, ref_modes, _ = run_staggered(tiny_qwen3, every=1)
    got, modes, _ = run_staggered(tiny_qwen3, every=1, enable_mixed_chunk=True, max_mixed_tokens=1)
    assert got == ref and modes == ref_modes


def test_mixed_steps_with_retraction_give_the_same_tokens(tiny_qwen3):
    """A pool of ~80 tokens reserving 2 output tokens per request: mixed steps retract and resume too."""
    opts = dict(kv_cache_gb=0.00008, reserve_new_tokens=2)
    ref, _, _ = run_staggered(tiny_qwen3, every=1, **opts)
    got, modes, retracted = run_staggered(tiny_qwen3, every=1, enable_mixed_chunk=True, max_mixed_tokens=7, **opts)
    assert "mixed" in modes and retracted > 0
    assert got == ref


@pytest.fixture(scope="module")
def triton_mixed() -> dict[str, str]:
    pytest.importorskip("triton")
    from tests.kernels.interp import run_interpreted

    return run_interpreted("tests.engine.mixed_cases", ["qwen3", "deepseek_v2"])


@pytest.mark.parametrize("arch", ["qwen3", "deepseek_v2"])
def test_mixed_steps_through_the_triton_backends(arch, triton_mixed):
    """Per-head Triton (its extend kernel) and latent Triton (torch extend beside its decode kernel), in a
    child process under Triton's interpreter (this process never imports Triton in interpreter mode)."""
    assert triton_mixed.get(arch) == "ok", triton_mixed
