"""Rewrite a cache root's GEMV plans so that the engine runs every fused prologue apart: in each autotune
result of the GEMV, the launches chosen for the RMSNorm and SiLU·mul prologues become None (the norm or the
SiLU·mul kernel, then the plan's plain launch), the plain launches stay. Run on a copy of a tuned root, the two
roots differ only in the fusions, so an engine run on each tells what the fusions are worth in a step (the
start-up tuner times them one linear at a time). Usage: `python benchmarks/drop_fusions.py ROOT`."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def drop(path: Path) -> int:
    """Set the fused launches of one GEMV autotune file to None; returns how many were dropped."""
    body = json.loads(path.read_text())
    plan = body.get("results", {}).get("plan", {})
    dropped = 0
    for fusion, launches in plan.items():
        if fusion == "plain":
            continue
        for rows, launch in launches.items():
            if launch is not None:
                launches[rows] = None
                dropped += 1
    path.write_text(json.dumps(body, indent=1, sort_keys=True))
    return dropped


def main(args: list[str]) -> None:
    if len(args) != 1 or not (Path(args[0]) / "autotune").is_dir():
        raise SystemExit(__doc__)
    files = sorted((Path(args[0]) / "autotune" / "gemv").glob("*.json"))
    print(f"{sum(drop(p) for p in files)} fused launches dropped from {len(files)} GEMV plans")


if __name__ == "__main__":
    main(sys.argv[1:])
