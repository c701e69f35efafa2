"""``python -m tierlm.jit [--output PATH] [--cuda-arch 9.0]``: write a .clangd for the JIT kernel sources."""
from __future__ import annotations

import argparse
from pathlib import Path

from tierlm.jit.clangd import write_clangd


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tierlm.jit", description=__doc__)
    ap.add_argument("--output", default=".", help="file or directory (default: ./.clangd)")
    ap.add_argument("--cuda-arch", default=None, help="GPU arch clangd assumes for .cu/.cuh files (default 9.0)")
    args = ap.parse_args()
    out = write_clangd(Path(args.output), args.cuda_arch)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
