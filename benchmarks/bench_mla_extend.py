"""GPU benchmark of the MLA extend kernel against the torch path it replaces, at DeepSeek shapes.

Latent 512 + rope 64 (bf16, page size 16); 16 heads (DeepSeek-V2-Lite) and 128 (V2 / V3). Cases: one prompt
of 1K-8K tokens, prompts on cached prefixes, many short prompts in one pass. Each case's new latents are in the
pool already, as the backend stores them before attending. Per case: the torch path (`MLATorchBackend.extend`,
the backend's extend before the kernel), then each launch variant of `MLAExtendConfig`, with TFLOP/s (the
visible (query, key) pairs times 2 x (576 + 512) per head: causal, nothing counted twice) and max |err| of the
first request's last 64 queries against float32 torch attention. A short table of the default launch comes last.

Usage: `PYTHONPATH=. python benchmarks/bench_mla_extend.py [--quick] [--no-torch]` from the repo root; needs CUDA.
"""
from __future__ import annotations

import argparse
import dataclasses
from itertools import accumulate

import torch
import triton

from benchmarks.timing import median_seconds
from tierlm.attention.base import ForwardBatch
from tierlm.attention.mla_torch import MLATorchBackend
from tierlm.kernels.mla_extend import MLAExtendConfig, mla_extend
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.pool import KVPool

LORA, ROPE, PAGE = 512, 64, 16
WIDTH = LORA + ROPE
DTYPE = torch.bfloat16
SCALE = (128 + ROPE) ** -0.5

# (label, heads, prefix lens, extend lens)
CASES = [
    ("V2-Lite 1 x 1K", 16, [0], [1024]),
    ("V2-Lite 1 x 4K", 16, [0], [4096]),
    ("V2-Lite 1 x 8K", 16, [0], [8192]),
    ("V2-Lite 4 x 2K on 2K", 16, [2048] * 4, [2048] * 4),
    ("V2-Lite 32 x 256", 16, [0] * 32, [256] * 32),
    ("V3 1 x 4K", 128, [0], [4096]),
    ("V3 4 x 1K on 1K", 128, [1024] * 4, [1024] * 4),
]
VARIANTS = [MLAExtendConfig()] + [MLAExtendConfig(**kw) for kw in (
    dict(block_t=2), dict(block_t=2, num_warps=4), dict(block_t=1, num_warps=4), dict(block_t=1, num_warps=4,
                                                                                     block_n=64),
    dict(block_t=2, num_stages=3), dict(block_t=4, block_n=64), dict(block_t=8), dict(block_t=4, num_stages=1),
    dict(block_t=4, block_n=16), dict(block_t=2, block_n=64), dict(block_t=4, block_h=8, num_warps=4))]


def label(cfg: MLAExtendConfig) -> str:
    return f"t{cfg.block_t} h{cfg.block_h} n{cfg.block_n} w{cfg.num_warps} s{cfg.num_stages}"


class Case:
    """Requests with their prefixes and new tokens' latents in shuffled pages of one pool layer."""

    def __init__(self, heads: int, prefix: list[int], ext: list[int], gen: torch.Generator) -> None:
        self.heads, self.prefix, self.ext = heads, prefix, ext
        seqs = [p + n for p, n in zip(prefix, ext)]
        per = triton.cdiv(max(seqs), PAGE)
        num_pages = len(seqs) * per + 1
        self.pool = KVPool(KVLayout.latent(1, WIDTH, DTYPE), num_pages, PAGE, torch.device("cuda"))
        self.pool["latent"][0].copy_(torch.randn(self.pool["latent"][0].shape, generator=gen).to(DTYPE))
        pages = (torch.randperm(num_pages - 1, generator=gen) + 1).view(len(seqs), per)
        pos = torch.arange(per * PAGE)
        self.table = (pages[:, pos // PAGE] * PAGE + pos % PAGE).int().cuda()
        tokens = sum(ext)
        self.q = torch.randn(tokens, heads, WIDTH, generator=gen).to(DTYPE).cuda()
        self.out = torch.empty(tokens, heads, LORA, dtype=DTYPE, device="cuda")
        i32 = dict(dtype=torch.int32, device="cuda")
        rows = list(range(len(seqs)))
        self.batch = ForwardBatch(
            mode="prefill", input_ids=torch.zeros(tokens, dtype=torch.int64, device="cuda"),
            positions=torch.zeros(tokens, dtype=torch.int64, device="cuda"),
            out_loc=torch.zeros(tokens, dtype=torch.int64, device="cuda"), req_rows=torch.tensor(rows, **i32),
            prefix_lens=torch.tensor(prefix, **i32), seq_lens=torch.tensor(seqs, **i32),
            qo_indptr=torch.tensor([0, *accumulate(ext)], **i32), extend_lens_cpu=ext, prefix_lens_cpu=prefix,
            seq_lens_cpu=seqs, req_rows_cpu=rows)
        pairs = sum(n * p + n * (n + 1) // 2 for p, n in zip(prefix, ext))
        self.flops = 2 * heads * pairs * (WIDTH + LORA)

    def kernel(self, cfg: MLAExtendConfig):
        b = self.batch
        return lambda: mla_extend(self.q, self.pool["latent"][0], self.out, self.table, b.req_rows, b.prefix_lens,
                                  b.qo_indptr, b.extend_lens_cpu, SCALE, cfg)

    def torch_path(self):
        backend = MLATorchBackend(self.pool, self.table, self.heads, WIDTH, SCALE, LORA)
        return lambda: backend.attend_latent(self.q, self.out, 0, self.batch, range(len(self.ext)))

    def error(self) -> float:
        """Max |err| of request 0's last 64 queries in `out` against float32 attention."""
        p, n = self.prefix[0], self.ext[0]
        lat = self.pool["latent"][0][self.table[0, :p + n].long()].float()
        m = min(64, n)
        q = self.q[n - m:n].float()
        scores = torch.einsum("thd,sd->ths", q, lat) * SCALE
        causal = torch.arange(p + n, device="cuda")[None, :] > (p + n - m + torch.arange(m, device="cuda"))[:, None]
        probs = scores.masked_fill(causal[:, None, :], float("-inf")).softmax(-1)
        want = torch.einsum("ths,sc->thc", probs, lat[:, :LORA])
        return (self.out[n - m:n].float() - want).abs().max().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only the default launch")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch path (slow at long prompts)")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    variants = VARIANTS[:1] if args.quick else VARIANTS
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    summary = []
    for name, heads, prefix, ext in CASES:
        case = Case(heads, prefix, ext, gen)
        print(f"\n## {name}: {case.flops / 1e12:.3f} TFLOP")
        torch_ms = float("nan")
        if not args.no_torch:
            try:
                torch_ms = median_seconds(case.torch_path(), iters=3) * 1e3
                print(f"{'torch path':32s} {torch_ms:10.3f} ms {case.flops / torch_ms / 1e9:8.1f} TFLOP/s "
                      f"err {case.error():.1e}", flush=True)
            except torch.OutOfMemoryError:
                print("torch path: out of memory")
        best = None
        for cfg in variants:
            try:
                ms = median_seconds(case.kernel(cfg), iters=20) * 1e3
            except Exception as exc:  # noqa: BLE001 - a variant may not fit shared memory; report and go on
                print(f"{label(cfg):32s} failed: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            err = case.error()
            print(f"{label(cfg):32s} {ms:10.3f} ms {case.flops / ms / 1e9:8.1f} TFLOP/s err {err:.1e}", flush=True)
            if cfg == VARIANTS[0]:
                summary.append((name, torch_ms, ms, case.flops / ms / 1e9, err))
            best = min(best or (ms, cfg), (ms, cfg), key=lambda x: x[0])
        if best:
            print(f"best: {label(best[1])} {best[0]:.3f} ms")
        del case
        torch.cuda.empty_cache()
    print(f"\n## summary, default launch {label(VARIANTS[0])}")
    print(f"{'case':26s} {'torch ms':>10} {'kernel ms':>10} {'TFLOP/s':>9} {'speed-up':>9} {'max err':>8}")
    for name, t_ms, k_ms, tflops, err in summary:
        print(f"{name:26s} {t_ms:10.3f} {k_ms:10.3f} {tflops:9.1f} {t_ms / k_ms:8.1f}x {err:8.1e}")


if __name__ == "__main__":
    main()
