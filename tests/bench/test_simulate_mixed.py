"""`benchmarks/simulate_mixed.py` (a model of the scheduler's mixed-step sizing): decodes stall only without
mixed steps, and a burst's prefill step of its own (`burst_prefill`) is what the engine's rule decides."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import numpy as np  # noqa: E402

import simulate_mixed as sm  # noqa: E402


def test_mixed_steps_keep_decoding_while_prompts_arrive():
    sim = sm.Sim()
    results = {}
    for spec in ("off=0/0/0", "k4=2048/4/4096", "k4n=2048/4/0", "p=2048/4/0/prefill"):
        name, budget = sm.parse_variant(spec)
        ttft, tpot = sm.run(sim, budget, 18.0, 300, 1024, 64, seed=1)
        assert len(ttft) == len(tpot) == 300
        results[name] = (np.median(ttft), np.median(tpot))
    assert results["k4"][1] < results["off"][1]  # decodes ride along instead of waiting for each prefill
    assert results["k4"][0] > results["off"][0]  # a lone prompt spread over 4 passes waits longer for its token
    # burst threshold 0 means never: "p" is k4n with a flag that never fires
    assert results["p"] == results["k4n"] != results["k4"]
    assert sm.parse_variant("x=2048/2/1024/prefill")[1].burst_prefill


def test_a_finer_ladder_changes_only_the_mixed_variants(monkeypatch, capsys):
    def table(*extra: str) -> dict[str, str]:
        monkeypatch.setattr(sys, "argv", ["simulate_mixed.py", "--requests", "80", "--seeds", "1", "--output-len",
                                          "32", "--variants", "off=0/0/0;k1=2048/1/4096", *extra])
        sm.main()
        rows = [line.split() for line in capsys.readouterr().out.splitlines()]
        return {r[0]: " ".join(r[1:5]) for r in rows if r and r[0] in ("off", "k1")}

    coarse, fine = table(), table("--ladder", "64")
    assert coarse["off"] == fine["off"] and coarse["k1"] != fine["k1"]
