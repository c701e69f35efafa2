"""`tierlm bench offline` end to end on a tiny model (CPU), with the transformers comparison."""
from __future__ import annotations

import json

import pytest

from tierlm.cli.main import main


def test_offline_bench_json_and_hf_ratio(tiny_qwen3, capsys):
    rc = main(["bench", "offline", "--model", str(tiny_qwen3), "--load-format", "auto", "--device", "cpu",
               "--dtype", "float32", "--kv-cache-gb", "0.01", "--page-size", "4", "--num-requests", "6",
               "--input-len", "5", "12", "--output-len", "3", "8", "--compare", "hf", "--hf-batch-size", "4",
               "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    t = r["tierlm"]
    assert t["output_tokens"] == r["hf"]["output_tokens"] > 0
    assert t["output_tok_per_s"] > 0 and r["speedup_vs_hf"] == pytest.approx(
        t["output_tok_per_s"] / r["hf"]["output_tok_per_s"])
    assert t["ttft_s"]["p50"] <= t["ttft_s"]["p99"] and t["tpot_s"]["p50"] > 0
    assert r["startup"]["first_token_s"] >= r["startup"]["construct_s"] > 0


def test_offline_bench_bad_ranges(capsys):
    assert main(["bench", "offline", "--input-len", "10", "5"]) == 2
    assert "--input-len" in capsys.readouterr().err
