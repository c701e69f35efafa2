"""Run a benchmark script with the decode linears' tuner choosing a kernel launch when it takes at most MARGIN
times the fastest unfused path (the engine's rule is 0.97): does a PDL-launched kernel that loses to cuBLAS
alone win inside a decode step, where its neighbours overlap it and cuBLAS's kernels stop the chain?

The margin enters the tuning's fingerprint, so results are tuned and stored apart from the default's.
Usage: `PYTHONPATH=. python benchmarks/with_margin.py 1.3 benchmarks/profile_engine.py [ARGS...]`.
"""
from __future__ import annotations

import runpy
import sys

from tierlm.kernels import gemv_tune, linear_tune, skinny_gemm_tune


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    margin = float(sys.argv[1])
    for module in (linear_tune, skinny_gemm_tune, gemv_tune):
        module.MARGIN = margin
    script = sys.argv[2]
    sys.argv = [script] + sys.argv[3:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
