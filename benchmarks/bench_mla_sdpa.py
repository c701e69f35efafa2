"""GPU benchmark: which of torch's SDPA kernels the decompressed latent attention should take, and what a
sequence length never seen before costs each (kernels that build a plan per shape pay it on every new prompt
length, which a serving engine meets all the time).

For DeepSeek-V2-Lite's heads (16 x 192 key / 128 value columns) each choice runs (a) once on each of
`FRESH` sequence lengths it has not seen (the sum of those first calls, synchronized) and (b) timed on a
seen shape: 2K and 8K new tokens, 256 new on an 8K prefix. Choices: torch's default dispatch with values 128
wide and padded to 192, only flash / memory-efficient attention with padded values, and the engine's calls
(`tierlm.attention.causal_sdpa`: cuDNN first over bucketed lengths without a prefix, flash after one).

Usage: `PYTHONPATH=. python benchmarks/bench_mla_sdpa.py` from the repo root; needs CUDA.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from benchmarks.timing import median_seconds
from tierlm.attention.causal_sdpa import fresh_causal, offset_causal

HEADS, QK, V = 16, 192, 128
FRESH = list(range(1001, 1401, 20))  # 20 lengths
CHOICES = {"default, v 128": (None, False), "default, v padded": (None, True),
           "flash/efficient, v padded": ([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION], True)}


def attend(new: int, prefix: int, backends, pad: bool) -> torch.Tensor:
    seq = new + prefix
    q = torch.randn(1, HEADS, new, QK, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, HEADS, seq, QK, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, HEADS, seq, QK if pad else V, device="cuda", dtype=torch.bfloat16)
    mask = causal_lower_right(new, seq) if prefix else None

    def run() -> torch.Tensor:
        if backends is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=not prefix)
        with sdpa_kernel(backends):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=not prefix)
    return run


def engine(new: int, prefix: int, *_) -> object:
    """The engine's call for `new` tokens after `prefix`: its layout (`[tokens, heads, dim]`), values 128 wide."""
    q = torch.randn(new, HEADS, QK, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(new + prefix, HEADS, QK, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(new + prefix, HEADS, V, device="cuda", dtype=torch.bfloat16)
    call = offset_causal if prefix else fresh_causal
    return lambda: call(q, k, v, QK ** -0.5)


def main() -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cudnn {torch.backends.cudnn.version()}")
    print(f"{'choice':28s} {'first calls ms':>15} {'2K ms':>8} {'8K ms':>8} {'256 on 8K ms':>13}")
    for label, (backends, pad) in [*CHOICES.items(), ("engine (causal_sdpa)", (None, False))]:
        make = engine if label.startswith("engine") else attend
        make(999, 0, backends, pad)()  # one-time initialisation outside the timing
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for n in FRESH:
            make(n, 0, backends, pad)()
        torch.cuda.synchronize()
        fresh_ms = (time.perf_counter() - t0) * 1e3
        steady = [median_seconds(make(n, p, backends, pad), iters=10) * 1e3
                  for n, p in ((2048, 0), (8192, 0), (256, 8192))]
        print(f"{label:28s} {fresh_ms:15.1f} {steady[0]:8.3f} {steady[1]:8.3f} {steady[2]:13.3f}", flush=True)


if __name__ == "__main__":
    main()
