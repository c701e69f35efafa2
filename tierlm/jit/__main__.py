"""``python -m tierlm.jit [--output PATH] [--cuda-arch 9.0]``: write a .clangd for the JIT kernel sources."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tierlm.jit.clangd import write_clangd


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tierlm.jit", description=__doc__)
    ap.add_argument("--output", default=".", help="file, or directory to put .clangd in (default: ./.clangd); "
                                                  "a trailing / names a directory, created if needed")
    ap.add_argument("--cuda-arch", default=None, help="GPU arch clangd assumes for .cu/.cuh files (default 9.0)")
    args = ap.parse_args()
    target = Path(args.output)
    try:
        if args.output.endswith(("/", os.sep)):  # Path() drops the slash; the user meant a directory
            target.mkdir(parents=True, exist_ok=True)
        out = write_clangd(target, args.cuda_arch)
    except OSError as e:
        sys.exit(f"{ap.prog}: error: --output {args.output}: {e.strerror or e}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
