"""One table from `tierlm bench multiturn --json` files whose `--modes` repeat (for example `l2,l3,l2,l3`).

Per run of a mode: wall time, TTFT p50 per round, the mean TTFT over all rounds, and the engine's host ms per
step (schedule / launch / wait / outputs). Then, per file, every mode against the first mode of the file
pooled over its runs (TTFT p50 of the pooled requests per round), so that A/A spread (the same mode twice)
and A/B difference are read side by side.

Usage: python benchmarks/multiturn_pairs.py RUN.json [RUN.json ...]
"""
from __future__ import annotations

import json
import statistics
import sys


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rows(path: str) -> None:
    data = json.load(open(path))
    results = data["results"]
    print(f"== {path}")
    print("mode | wall s | TTFT p50 per round (s) | mean | host ms/step sched/launch/wait/out")
    pooled: dict[str, list[list[float]]] = {}
    for r in results:
        rounds = [x["ttft_values_s"] for x in r["rounds"]]
        mine = pooled.setdefault(r["mode"], [[] for _ in rounds])
        for acc, vals in zip(mine, rounds):
            acc.extend(vals)
        host = r.get("step_host", {}).get("ms_per_step", {})
        phases = "/".join(f"{host.get(k, float('nan')):.3f}" for k in ("schedule", "launch", "wait", "outputs"))
        mean = statistics.fmean(v for vals in rounds for v in vals)
        print(f"{r['mode']} | {r['elapsed_s']:.2f} | {' '.join(f'{p50(v):.3f}' for v in rounds)} | "
              f"{mean:.4f} | {phases}")
    base_mode = results[0]["mode"]
    base = [p50(v) for v in pooled[base_mode]]
    for mode, per_round in pooled.items():
        ratio = " ".join(f"{p50(v) / b:.3f}" for v, b in zip(per_round, base))
        print(f"pooled {mode} / {base_mode}: {ratio}")


def main() -> int:
    for path in sys.argv[1:]:
        rows(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
