"""One line per `tierlm bench offline --json` result file: output tok/s, TTFT p50, TPOT p50 and, where the
file has it, the inter-token latency's p50 / max (or why there is none) and the kernels compiled inside the timed
run. Usage: `python benchmarks/offline_summary.py FILE.json...` (the GPU scripts' tables end with it)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    width = max((len(Path(p).stem) for p in paths), default=0)
    for path in paths:
        tag = Path(path).stem
        try:
            t = json.loads(Path(path).read_text())["tierlm"]
            itl = t.get("itl_s")  # results written before ITL was reported lack it
            gaps = f"  ITL p50 {itl['p50'] * 1e3:.3f} / max {itl['max'] * 1e3:.2f} ms" if itl else ""
            compiled = ""
            if t.get("new_kernels"):
                names = ", ".join(t.get("new_kernel_names", []))  # results written before names were kept lack them
                compiled = f"  {t['new_kernels']} kernels compiled in the run" + (f": {names}" if names else "")
            print(f"{tag:{width}s}  out tok/s {t['output_tok_per_s']:9.0f}  TTFT p50 {t['ttft_s']['p50']:.3f} s  "
                  f"TPOT p50 {t['tpot_s']['p50'] * 1e3:.3f} ms{gaps}{compiled}")
        except (OSError, KeyError, ValueError) as e:
            print(f"{tag:{width}s}  no result ({e})")


if __name__ == "__main__":
    main(sys.argv[1:])
