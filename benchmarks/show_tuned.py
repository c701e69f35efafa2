"""What the start-up tuners chose in one or more cache roots: one line per autotune result (kernel, the shape
it was tuned for, the chosen launches without their timings), so an A/B records which launches each side ran.
Tunings of near-equal launches can differ between two roots and move a workload by more than the change under
test (docs/benchmarks.md, 2026-12-04, evening). Usage: `python benchmarks/show_tuned.py ROOT [ROOT...]`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

SHAPE_KEYS = ("n", "k", "num_heads", "num_kv_heads", "head_dim", "dtype", "kv_dtype")


def summary(path: Path) -> str:
    body = json.loads(path.read_text())
    factors, results = body.get("factors", {}), dict(body.get("results", {}))
    results.pop("timings_us", None)
    results.pop("buckets", None)  # the shapes timed, also in the factors
    shape = " ".join(f"{k}={factors[k]}" for k in SHAPE_KEYS if k in factors)
    return f"{body.get('kernel', path.parent.name)} {shape}: {json.dumps(results, sort_keys=True)}"


def main(roots: list[str]) -> None:
    if not roots:
        raise SystemExit(__doc__)
    for root in roots:
        files = sorted(p for p in (Path(root) / "autotune").glob("*/*.json") if p.parent.name != "runs")
        print(f"== {root}: {len(files)} autotune results")
        for path in files:
            try:
                print("  " + summary(path))
            except (OSError, ValueError, AttributeError) as e:
                print(f"  {path.name}: unreadable ({e})")


if __name__ == "__main__":
    main(sys.argv[1:])
