"""What the start-up decode tuner times and picks, shape by shape.

Times every tuner candidate (`tierlm.attention.triton_autotune.CANDIDATES`, graph-replayed as the tuner does) at
each shape of its batch buckets (`BUCKETS`, the pool's pages of 16) and at 64 x 2,048 in pages of one slot (what the
tuner timed before it had buckets), ROUNDS times (the rounds show the timing noise); then each bucket's pick per
round, with the tie rule and without. Usage (GPU): `PYTHONPATH=. python benchmarks/decode_tune_shapes.py
[--kv-dtype fp8] [--rounds 2]`
"""
from __future__ import annotations

import argparse
import itertools

import torch

from tierlm.attention.triton_autotune import BUCKETS, CANDIDATES, TuneShape, decode_inputs, pick, time_candidates
from tierlm.attention.triton_backend import TritonAttentionConfig

HEADS, KV_HEADS, HEAD_DIM = 16, 8, 128  # Qwen3-0.6B


def label(page: int, s: TuneShape) -> str:
    return f"p{page} {s.batch}x" + (f"{s.high}" if s.low == s.high else f"{s.low}-{s.high}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kv-dtype", choices=("auto", "fp8"), default="auto")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    kv_dtype = torch.float8_e4m3fn if args.kv_dtype == "fp8" else None
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    print(f"device {torch.cuda.get_device_name(dev)}; kv {args.kv_dtype}")
    columns = {label(1, TuneShape(64, 2048, 2048)): (1, TuneShape(64, 2048, 2048))}
    columns.update({label(16, s): (16, s) for _, shapes in BUCKETS for s in shapes})
    names = ["/".join(map(str, v)) for v in itertools.product(*CANDIDATES.values())]
    us: dict[str, dict[str, list[float]]] = {c: {n: [] for n in names} for c in columns}
    for _ in range(args.rounds):
        for col, (page, shape) in columns.items():
            inputs = decode_inputs(HEADS, KV_HEADS, HEAD_DIM, torch.bfloat16, dev, shape.lengths(), page, kv_dtype)
            for name, ms in time_candidates(TritonAttentionConfig(), inputs, sms).items():
                us[col][name].append(ms * 1e3)
            del inputs
    print(f"\n{'tile/warps/stages':>18} " + " ".join(f"{c:>17}" for c in columns) + "   (us, rounds)")
    for n in names:
        print(f"{n:>18} " + " ".join(f"{'/'.join(f'{t:.1f}' for t in us[c][n]):>17}" for c in columns))
    for rnd in range(args.rounds):
        for min_batch, shapes in BUCKETS:
            timings = {n: [us[label(16, s)][n][rnd] for s in shapes] for n in names}
            print(f"round {rnd + 1} pick from batch {min_batch:<4} {pick(timings)} (no tie rule: {pick(timings, 0.0)})")


if __name__ == "__main__":
    main()
