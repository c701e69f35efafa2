"""The decode attention launches a cache root's start-up tuning chose, one line per KV dtype.
Usage: `python benchmarks/decode_tunings.py CACHE_ROOT` (the GPU scripts end with it)."""
from __future__ import annotations

import json
import pathlib
import sys


def main(root: str) -> None:
    for f in sorted(pathlib.Path(root, "autotune", "triton_decode").glob("*.json")):
        d = json.loads(f.read_text())
        print("decode tuning", d.get("factors", {}).get("kv_dtype", "model dtype"),
              {k: v for k, v in d.get("results", {}).items() if k in ("launches", "us") or k.startswith("decode_")})


if __name__ == "__main__":
    main(sys.argv[1])
