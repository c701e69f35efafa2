"""`StepClock`: host time per step phase, summed; through the engine it accounts for every step it runs."""
from __future__ import annotations

import time

from tests.conftest import CPU_OPTS
from tierlm.config import EngineConfig
from tierlm.engine.engine import Engine
from tierlm.engine.step_clock import PHASES, StepClock
from tierlm.sampling_params import SamplingParams


def test_laps_add_up_per_phase_and_reset():
    c = StepClock()
    for _ in range(2):
        c.start()
        time.sleep(0.002)
        c.lap("schedule")
        c.lap("launch")
        time.sleep(0.004)
        c.lap("wait")
    snap = c.snapshot()
    assert snap["steps"] == 2 and set(snap["ms_per_step"]) == set(PHASES)
    assert snap["ms_per_step"]["wait"] >= 4 and snap["ms_per_step"]["schedule"] >= 2
    assert snap["ms_per_step"]["launch"] < snap["ms_per_step"]["schedule"]
    assert abs(snap["total_ms_per_step"] - sum(snap["ms_per_step"].values())) < 1e-3
    c.reset()
    assert c.snapshot()["steps"] == 0 and sum(c.snapshot()["seconds"].values()) == 0


def test_engine_steps_are_clocked(tiny_qwen3):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **CPU_OPTS))
    try:
        assert engine.stats()["step_host"]["steps"] == 0
        engine.add_request("a", list(range(5, 30)), SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True,
                                                                   detokenize=False))
        steps = 0
        while engine.has_unfinished():
            engine.step()
            steps += 1
        clock = engine.stats()["step_host"]
        assert clock["steps"] == steps and clock["seconds"]["launch"] > 0 and clock["total_ms_per_step"] > 0
    finally:
        engine.close()
