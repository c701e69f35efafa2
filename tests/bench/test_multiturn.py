"""`tierlm bench multiturn` end to end on a tiny model (CPU): JSON figures, per-round TTFT, tier hits."""
from __future__ import annotations

import json

from tierlm.cli.main import main


def test_multiturn_bench_runs_all_modes(tiny_qwen3, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["bench", "multiturn", "--model", str(tiny_qwen3), "--load-format", "auto", "--device", "cpu",
               "--dtype", "float32", "--page-size", "4", "--num-clients", "8", "--num-rounds", "3",
               "--first-turn-len", "24", "--turn-len", "8", "--answer-len", "4", "--working-set-factor", "3",
               "--concurrency", "2",
               "--output-dir", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert json.loads((out / "multiturn.json").read_text())["results"] == summary["results"]
    by_mode = {r["mode"]: r for r in summary["results"]}
    assert set(by_mode) == {"gpu", "l2", "l3"}
    assert all(len(r["rounds"]) == 3 and r["output_tok_per_s"] > 0 for r in by_mode.values())
    for rnd in by_mode["l2"]["rounds"]:  # every conversation's TTFT, in conversation order, for pooling runs
        values = rnd["ttft_values_s"]
        assert len(values) == 8 and min(values) > 0 and sorted(values)[4] == rnd["ttft_s"]["p50"]
    assert summary["working_set_tokens"] >= 2.5 * by_mode["gpu"]["kv_pool_tokens"]  # pool sized below the set
    assert by_mode["gpu"]["tier_hits"]["L2"]["tokens"] == 0
    assert by_mode["l2"]["tier_hits"]["L2"]["tokens"] > 0  # evicted conversations came back from host
    assert by_mode["l2"]["hit_rate"]["L1"] + by_mode["l2"]["hit_rate"]["L2"] > by_mode["gpu"]["hit_rate"]["L1"]
