"""Figures of a `tierlm bench serve` run: throughput, latency percentiles, goodput, the table and the plot.

Latencies are reported in milliseconds as mean, p50, p90 and p99 (linear interpolation between ranks, as
numpy and `vllm bench serve` compute them): TTFT (send to first token), TPOT (per output token after the
first, per request), ITL (every gap between two token arrivals, all requests pooled) and E2EL (send to
last byte). Goodput counts the requests per second that met every SLO given.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from tierlm.cli.bench.serve_client import RequestResult

STAT_KEYS = ("mean", "p50", "p90", "p99")
LATENCIES = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")


def stats(values_s: list[float]) -> dict[str, Optional[float]]:
    """mean/p50/p90/p99 in ms of values in seconds (None for each when there are none)."""
    if not values_s:
        return {k: None for k in STAT_KEYS}
    ms = np.asarray(values_s, dtype=np.float64) * 1e3
    return {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99))}


def meets_slo(r: RequestResult, slo_ttft_ms: Optional[float], slo_tpot_ms: Optional[float]) -> bool:
    return (r.ok and (slo_ttft_ms is None or r.ttft * 1e3 <= slo_ttft_ms)
            and (slo_tpot_ms is None or r.tpot * 1e3 <= slo_tpot_ms))


def summarize(results: list[RequestResult], duration: float, slo_ttft_ms: Optional[float] = None,
              slo_tpot_ms: Optional[float] = None) -> dict[str, Any]:
    """The report of a run (every key always present; latency figures None when nothing completed)."""
    ok = [r for r in results if r.ok]
    n_in = sum(r.prompt_len or 0 for r in ok)
    n_out = sum(r.output_len for r in ok)
    good = sum(meets_slo(r, slo_ttft_ms, slo_tpot_ms) for r in results)
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            errors[r.error] = errors.get(r.error, 0) + 1
    return {
        "completed": len(ok), "failed": len(results) - len(ok), "duration_s": duration,
        "total_input_tokens": n_in, "total_output_tokens": n_out,
        "request_throughput": len(ok) / duration, "input_tok_per_s": n_in / duration,
        "output_tok_per_s": n_out / duration, "total_tok_per_s": (n_in + n_out) / duration,
        "ttft_ms": stats([r.ttft for r in ok]),
        "tpot_ms": stats([r.tpot for r in ok if r.output_len > 1]),
        "itl_ms": stats([gap for r in ok for gap in r.itl]),
        "e2el_ms": stats([r.latency for r in ok]),
        "slo": {"ttft_ms": slo_ttft_ms, "tpot_ms": slo_tpot_ms},
        "goodput_req_per_s": good / duration, "slo_attained": good / len(results) if results else 0.0,
        "errors": [{"error": e, "count": c} for e, c in sorted(errors.items(), key=lambda kv: -kv[1])[:5]],
    }


def per_request(results: list[RequestResult]) -> list[dict[str, Any]]:
    """One row per request (in send order) for the JSON file and the plot."""
    rows = []
    for r in sorted(results, key=lambda r: r.sent):
        rows.append({"sent_s": r.sent, "ok": r.ok, "ttft_ms": r.ttft * 1e3 if r.ok else None,
                     "tpot_ms": r.tpot * 1e3 if r.ok and r.output_len > 1 else None,
                     "e2el_ms": r.latency * 1e3 if r.ok else None, "prompt_len": r.prompt_len,
                     "output_len": r.output_len, "error": r.error or None})
    return rows


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}"


def format_table(report: dict[str, Any]) -> str:
    s = report["summary"]
    rate = report["config"]["request_rate"]
    lines = [f"{report['config']['base_url']}{report['config']['endpoint']}  model {report['config']['model']}  "
             f"rate {rate} req/s  max concurrency {report['config']['max_concurrency'] or '-'}",
             f"completed {s['completed']}  failed {s['failed']}  duration {s['duration_s']:.2f} s",
             f"request throughput {s['request_throughput']:.2f} req/s   output {s['output_tok_per_s']:.1f} tok/s   "
             f"total {s['total_tok_per_s']:.1f} tok/s",
             f"{'latency (ms)':<14}" + "".join(f"{k:>10}" for k in STAT_KEYS)]
    for name in LATENCIES:
        lines.append(f"{name[:-3].upper():<14}" + "".join(f"{_fmt(s[name][k]):>10}" for k in STAT_KEYS))
    slo = s["slo"]
    given = ", ".join(f"{k[:-3].upper()} <= {v} ms" for k, v in slo.items() if v is not None) or "none given"
    lines.append(f"goodput {s['goodput_req_per_s']:.2f} req/s ({s['slo_attained']:.1%} of requests; SLO {given})")
    for e in s["errors"]:
        lines.append(f"error x{e['count']}: {e['error']}")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    """TTFT and TPOT of each request against its send time, as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for ax, key, label in ((top, "ttft_ms", "TTFT (ms)"), (bottom, "tpot_ms", "TPOT (ms)")):
        pts = [(r["sent_s"], r[key]) for r in rows if r[key] is not None]
        if pts:
            ax.scatter(*zip(*pts), s=6, alpha=0.6)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    bottom.set_xlabel("request sent at (s)")
    top.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
