"""What a start-up tuner measured for a fused step against the same step apart, per rows bucket: for every
autotune result of a linear with a fusion (a GEMV's RMSNorm or SiLU·mul prologue; any kind a plan records
beside "plain"), the cuBLAS path, the fused step apart with the kernel's plain launch, the fastest fused launch
and whether the tuner chose one, in microseconds. Usage: `python benchmarks/show_fusion_timings.py ROOT [ROOT...]`."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def timed_paths(timings: dict, fusion: str, rows: str) -> dict:
    """The tuner's microseconds for (fusion, rows) by path: "torch", "unfused+<launch>" or a fused launch's label."""
    prefix = f"{fusion}/{rows}/"
    return {k[len(prefix):]: v for k, v in timings.items() if k.startswith(prefix)}


def fused_launches(timings: dict, fusion: str, rows: str) -> dict:
    """The fused launches timed for (fusion, rows): label -> microseconds."""
    return {k: v for k, v in timed_paths(timings, fusion, rows).items()
            if k != "torch" and not k.startswith("unfused+")}


def fusion_rows(body: dict) -> list[str]:
    """One line per (fusion, rows) of an autotune result's timings."""
    factors, results = body.get("factors", {}), body.get("results", {})
    timings, plan = results.get("timings_us", {}), results.get("plan", {})
    lines = []
    for fusion in sorted(f for f in plan if f != "plain"):
        for rows in sorted(plan[fusion], key=int):
            mine = timed_paths(timings, fusion, rows)
            apart = {k: v for k, v in mine.items() if k.startswith("unfused+")}
            fused = fused_launches(timings, fusion, rows)
            best = min(fused.items(), key=lambda kv: kv[1]) if fused else ("-", float("nan"))
            apart_us = min(apart.values()) if apart else float("nan")
            chosen = plan[fusion][rows]
            lines.append(f"  {body.get('kernel')} {factors.get('n')}x{factors.get('k')} {fusion} rows {rows:>3}: "
                         f"torch {mine.get('torch', float('nan')):7.2f}  apart {apart_us:7.2f}  "
                         f"best fused {best[1]:7.2f} ({best[0]})  chosen: {'yes' if chosen else 'no'}")
    return lines


def main(roots: list[str]) -> None:
    if not roots:
        raise SystemExit(__doc__)
    for root in roots:
        for path in sorted(p for p in (Path(root) / "autotune").glob("*/*.json") if p.parent.name != "runs"):
            try:
                lines = fusion_rows(json.loads(path.read_text()))
            except (OSError, ValueError, AttributeError) as e:
                lines = [f"  {path.name}: unreadable ({e})"]
            if lines:
                print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
