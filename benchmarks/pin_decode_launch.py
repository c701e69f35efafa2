"""Copies of a tuned cache root with the decode attention launch pinned: for each `KV_TILE:STAGES` (4 warps), a copy
`ROOT-KV_TILE-STAGES` whose every stored decode tuning runs that one launch at every batch size.
Usage: `python benchmarks/pin_decode_launch.py ROOT KV_TILE:STAGES [...]`."""
from __future__ import annotations

import json
import pathlib
import shutil
import sys


def main(root: str, launches: list[str]) -> None:
    for launch in launches:
        block_n, stages = map(int, launch.split(":"))
        copy = pathlib.Path(f"{root}-{block_n}-{stages}")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(root, copy)
        for path in (copy / "autotune" / "triton_decode").glob("*.json"):
            body = json.loads(path.read_text())
            body["results"]["launches"] = [[1, block_n, 4, stages]]
            path.write_text(json.dumps(body, indent=1, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
