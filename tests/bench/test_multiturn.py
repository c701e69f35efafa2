"""`tierlm bench multiturn` end to end on a tiny model (CPU): JSON figures, per-round TTFT, tier hits."""
from __future__ import annotations

import argparse
import json

from tierlm.cli.bench.multiturn import _answer_lens, _conversations
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
        assert len(rnd["submitted_s"]) == 8 and min(rnd["submitted_s"]) >= 0
        assert all(0 <= c < n for c, n in zip(rnd["cached_tokens"], rnd["prompt_tokens"]))
    first = by_mode["gpu"]["rounds"][0]  # round 1: every prompt is its first turn, nothing of it cached
    assert first["prompt_tokens"] == [24] * 8 and set(first["cached_tokens"]) == {0}
    assert sum(by_mode["l2"]["rounds"][2]["cached_tokens"]) > 0
    assert summary["working_set_tokens"] >= 2.5 * by_mode["gpu"]["kv_pool_tokens"]  # pool sized below the set
    assert by_mode["gpu"]["tier_hits"]["L2"]["tokens"] == 0
    assert by_mode["l2"]["tier_hits"]["L2"]["tokens"] > 0  # evicted conversations came back from host
    assert by_mode["l2"]["hit_rate"]["L1"] + by_mode["l2"]["hit_rate"]["L2"] > by_mode["gpu"]["hit_rate"]["L1"]


def test_random_range_ratio_spreads_the_turn_lengths():
    args = argparse.Namespace(workload_seed=3, num_clients=50, num_rounds=2, first_turn_len=100, turn_len=10,
                              random_range_ratio=0.5)
    turns = _conversations(args, 1000)
    first = [len(conv[0]) for conv in turns]
    later = [len(conv[1]) for conv in turns]
    assert min(first) >= 50 and max(first) <= 150 and len(set(first)) > 10
    assert min(later) >= 5 and max(later) <= 15 and len(set(later)) > 3
    assert turns == _conversations(args, 1000)  # the seed fixes the workload
    args.random_range_ratio = 0.0
    assert {len(conv[0]) for conv in _conversations(args, 1000)} == {100}


def test_random_range_ratio_spreads_the_answer_lengths_too():
    """As vllm bench draws output lengths: answers spread around --answer-len; the prompts stay as they were."""
    args = argparse.Namespace(workload_seed=3, num_clients=50, num_rounds=2, first_turn_len=100, turn_len=10,
                              answer_len=20, random_range_ratio=0.5)
    lens = [n for conv in _answer_lens(args) for n in conv]
    assert min(lens) >= 10 and max(lens) <= 30 and len(set(lens)) > 10
    assert _answer_lens(args) == _answer_lens(args)
    args.random_range_ratio = 0.0
    assert {n for conv in _answer_lens(args) for n in conv} == {20}


def test_multiturn_answers_have_the_drawn_lengths(tiny_qwen3, tmp_path, capsys):
    argv = ["--num-clients", "6", "--num-rounds", "2", "--first-turn-len", "24", "--turn-len", "8",
            "--answer-len", "8", "--random-range-ratio", "0.5", "--concurrency", "2"]
    assert main(["bench", "multiturn", "--model", str(tiny_qwen3), "--load-format", "auto", "--device", "cpu",
                 "--dtype", "float32", "--page-size", "4", "--modes", "gpu", *argv,
                 "--output-dir", str(tmp_path / "o"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["results"][0]
    args = argparse.Namespace(workload_seed=0, num_clients=6, num_rounds=2, answer_len=8, random_range_ratio=0.5)
    assert round(r["output_tok_per_s"] * r["elapsed_s"]) == sum(map(sum, _answer_lens(args)))


def test_random_range_ratio_out_of_range_is_a_cli_error(tmp_path, capsys):
    assert main(["bench", "multiturn", "--random-range-ratio", "1.5", "--output-dir", str(tmp_path / "o")]) != 0
    assert "--random-range-ratio must be in [0, 1)" in capsys.readouterr().err


def test_adaptive_host_eviction_serves_a_cycle_that_lru_cannot(tiny_qwen3, tmp_path, capsys):
    """Twelve conversations in turn, the device and host tiers holding about a third of them: under LRU the
    host tier evicts each prefix just before it comes back; `adaptive` switches to keeping what was used
    again and serves part of every round from host memory."""
    rates = {}
    for policy in ("lru", "adaptive"):
        assert main(["bench", "multiturn", "--model", str(tiny_qwen3), "--load-format", "auto", "--device", "cpu",
                     "--dtype", "float32", "--page-size", "4", "--num-clients", "12", "--num-rounds", "5",
                     "--first-turn-len", "256", "--turn-len", "32", "--answer-len", "4", "--working-set-factor",
                     "4.7", "--hicache-ratio", "1.5", "--concurrency", "2", "--modes", "l2",
                     "--hicache-eviction-policy", policy, "--output-dir", str(tmp_path / policy), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)["results"][0]
        assert result["tiers"]["L2"]["evicted_pages"] > 0  # the host tier is under pressure
        rates[policy] = (result["hit_rate"]["L2"], result["tiers"]["L2"]["eviction_order"])
    assert rates["lru"] == (0.0, "lru")
    assert rates["adaptive"][0] > 0.05 and rates["adaptive"][1] == "reused"
