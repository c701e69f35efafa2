"""Pin the decode attention launch of a tuned cache root: every stored decode tuning gets one launch, for every batch
size (`KV_TILE:STAGES`, 4 warps). Usage: `python benchmarks/pin_decode_launch.py ROOT KV_TILE:STAGES`."""
from __future__ import annotations

import json
import pathlib
import sys


def main(root: str, launch: str) -> None:
    block_n, stages = map(int, launch.split(":"))
    for path in pathlib.Path(root, "autotune", "triton_decode").glob("*.json"):
        body = json.loads(path.read_text())
        body["results"]["launches"] = [[1, block_n, 4, stages]]
        path.write_text(json.dumps(body, indent=1, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
