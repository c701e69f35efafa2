"""Figures of `tierlm bench serve` from known request timings: percentiles, TPOT, ITL, goodput."""
from __future__ import annotations

import json

import pytest

from tierlm.cli.bench.serve_client import RequestResult, arrival_offsets
from tierlm.cli.bench.serve_metrics import stats, summarize


def result(ttft: float, latency: float, n_out: int, prompt: int = 10) -> RequestResult:
    itl = [(latency - ttft) / (n_out - 1)] * (n_out - 1) if n_out > 1 else []
    return RequestResult(ok=True, ttft=ttft, latency=latency, itl=itl, prompt_len=prompt, output_len=n_out)


def test_summary_and_goodput():
    rs = [result(0.1, 1.1, 11), result(0.3, 0.8, 6), result(0.05, 0.05, 1),
          RequestResult(error="HTTP 503: queue full")]
    s = summarize(rs, duration=2.0, slo_ttft_ms=200, slo_tpot_ms=100)
    assert s["completed"] == 3 and s["failed"] == 1 and s["errors"] == [{"error": "HTTP 503: queue full", "count": 1}]
    assert s["total_output_tokens"] == 18 and s["output_tok_per_s"] == 9 and s["request_throughput"] == 1.5
    assert s["total_input_tokens"] == 30 and s["total_tok_per_s"] == 24
    assert s["tpot_ms"]["mean"] == pytest.approx(100)  # 1.0 s / 10 and 0.5 s / 5; a 1-token answer has none
    assert s["ttft_ms"]["p50"] == pytest.approx(100) and s["e2el_ms"]["p99"] == pytest.approx(1094)
    assert s["itl_ms"]["p50"] == pytest.approx(100)
    # request 0 meets both SLOs, request 1 misses TTFT, request 2 (one token) meets both, the failure none
    assert s["goodput_req_per_s"] == 1.0 and s["slo_attained"] == 0.5
    assert summarize(rs, 2.0)["goodput_req_per_s"] == 1.5  # no SLO: every completed request counts
    json.dumps(s, allow_nan=False)


def test_stats_percentiles_and_empty():
    st = stats([i / 1000 for i in range(1, 101)])
    assert st["p50"] == pytest.approx(50.5) and st["p90"] == pytest.approx(90.1) and st["p99"] == pytest.approx(99.01)
    assert stats([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_poisson_arrivals():
    offs = arrival_offsets(4000, 20.0, seed=3)
    gaps = [b - a for a, b in zip(offs, offs[1:])]
    assert offs[0] == 0 and all(g >= 0 for g in gaps)
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 20, rel=0.05)
    assert arrival_offsets(3, float("inf"), seed=0) == [0.0, 0.0, 0.0]
