"""The race sampler's Exp(1) draw (`race_sample._exp1`) word by word against float64, run by
test_race_sample.py (under the interpreter without CUDA, so the exact logarithm; compiled on a GPU, so the
hardware's approximate one). Prints the worst relative error and ok."""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from tierlm.kernels.race_sample import _exp1


@triton.jit
def _probe(r_ptr, out_ptr, n, BLOCK: tl.constexpr, FAST: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    r = tl.load(r_ptr + offs, mask=offs < n, other=0).to(tl.uint32, bitcast=True)
    tl.store(out_ptr + offs, _exp1(r, FAST), mask=offs < n)


def reference(words: np.ndarray) -> np.ndarray:
    """E = -ln(1 - v) in float64 from the float32 `v` the kernel forms."""
    k = np.where(words < 2**31, words, 2**32 - 1 - words).astype(np.float32)
    v = np.minimum((k + np.float32(0.5)) * np.float32(2.0**-31), np.float32(0.99999994))
    return -np.log1p(-v.astype(np.float64))


def main() -> None:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(0)
    special = [0, 1, 2, 3, 1000, 2**20, 2**28 - 1, 2**28, 2**28 + 1, 2**31 - 1, 2**31, 2**31 + 1, 2**32 - 1,
               2**32 - 2, 2**32 - 2**28]
    words = np.concatenate([np.array(special, dtype=np.uint64), rng.integers(0, 2**32, 4096, dtype=np.uint64),
                            rng.integers(0, 2**20, 512, dtype=np.uint64)])
    signed = torch.from_numpy(words.astype(np.uint32).view(np.int32)).to(dev)
    out = torch.empty(len(words), dtype=torch.float32, device=dev)
    _probe[(triton.cdiv(len(words), 256),)](signed, out, len(words), BLOCK=256, FAST=dev == "cuda")
    got, ref = out.cpu().double().numpy(), reference(words)
    assert np.isfinite(got).all() and (got > 0).all(), got[~(np.isfinite(got) & (got > 0))]
    rel = np.abs(got / ref - 1)
    worst = float(rel.max())
    # exact logarithm: float32 rounding of the series or of ln(1 - v); the approximate one adds about 1e-6
    assert worst < (4e-6 if dev == "cuda" else 1e-6), (worst, words[rel.argmax()])
    assert got.min() < 1e-9, "the smallest draws keep v's resolution"
    print(f"worst relative error {worst:.2e}")
    print("ok")


if __name__ == "__main__":
    main()
