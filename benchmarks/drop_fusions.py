"""Rewrite a cache root's GEMV plans so that the engine runs every fused prologue apart, or (`--force`) every
one fused: in each autotune result of the GEMV, the launches for the RMSNorm and SiLU·mul prologues become None
(the norm or the SiLU·mul kernel, then the plan's plain launch), or the fastest fused launch the tuner timed
whether or not it beat the step apart; the plain launches stay. Run on a copy of a tuned root, the two roots
differ only in the fusions, so an engine run on each tells what the fusions are worth in a step (the start-up
tuner times them one linear at a time). Usage: `PYTHONPATH=. python benchmarks/drop_fusions.py ROOT [--force]`."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from benchmarks.show_fusion_timings import fused_launches


def fastest(timings: dict, fusion: str, rows: str) -> dict | None:
    """The fastest fused launch timed for (fusion, rows), as a plan stores it, or None if none was timed."""
    from tierlm.kernels.gemv_tune import CANDIDATES

    by_label = {c.label(): c for c in CANDIDATES}
    timed = [(us, by_label[label]) for label, us in fused_launches(timings, fusion, rows).items()
             if label in by_label]
    return dataclasses.asdict(min(timed, key=lambda t: t[0])[1]) if timed else None


def rewrite(path: Path, force: bool) -> int:
    """Drop (or force) the fused launches of one GEMV autotune file; returns how many plans changed."""
    body = json.loads(path.read_text())
    results = body.get("results", {})
    changed = 0
    for fusion, launches in results.get("plan", {}).items():
        if fusion == "plain":
            continue
        for rows, launch in launches.items():
            new = fastest(results.get("timings_us", {}), fusion, rows) if force else None
            if new != launch:
                launches[rows] = new
                changed += 1
    path.write_text(json.dumps(body, indent=1, sort_keys=True))
    return changed


def main(args: list[str]) -> None:
    force = "--force" in args
    roots = [a for a in args if a != "--force"]
    if len(roots) != 1 or not (Path(roots[0]) / "autotune").is_dir():
        raise SystemExit(__doc__)
    files = sorted((Path(roots[0]) / "autotune" / "gemv").glob("*.json"))
    print(f"{sum(rewrite(p, force) for p in files)} fused launches {'forced' if force else 'dropped'} in "
          f"{len(files)} GEMV plans")


if __name__ == "__main__":
    main(sys.argv[1:])
