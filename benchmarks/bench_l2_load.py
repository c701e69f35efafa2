"""GPU benchmark: the engine's L2 -> L1 load bandwidth for a long prefix, against the pinned copy.

A Llama-3.1-8B-shaped engine (dummy weights) serves one long prompt, every device copy is dropped (the
host copies stay), and the prompt is served again: its whole prefix comes back from L2 in one load batch,
timed on the device by the engine (`Engine.stats()["tiers"]["loads"]`). The pinned host-to-device copy of
the same number of bytes is measured in the same process. One line per `--hicache-io-backend`.

    PYTHONPATH=. python benchmarks/bench_l2_load.py [--tokens 32768]
"""
from __future__ import annotations

import argparse
import random

import torch

from benchmarks.timing import median_seconds
from tierlm import LLM, SamplingParams


def pinned_h2d_gbps(nbytes: int) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dst = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    return nbytes / median_seconds(lambda: dst.copy_(src, non_blocking=True)) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--backends", default="auto,jit,dma")
    ap.add_argument("--model", default="builtin:llama-3.1-8b")
    ap.add_argument("--kv-cache-gb", type=float, default=8.0, help="device KV pool (must hold the prompt)")
    args = ap.parse_args()
    params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True, detokenize=False)
    rows = []
    for backend in args.backends.split(","):
        llm = LLM(args.model, load_format="dummy", skip_tokenizer_init=True, enable_hicache=True,
                  hicache_io_backend=backend, kv_cache_gb=args.kv_cache_gb, max_model_len=args.tokens + 64,
                  hicache_load_policy="always-load")  # the whole prefix in one load, whatever it costs
        kv = llm.engine.kv
        rng = random.Random(0)
        prompt = [rng.randrange(min(llm.engine.model_config.vocab_size, 10000)) for _ in range(args.tokens)]
        llm.generate([prompt], params)  # computes the prompt's KV
        from_l1 = llm.generate([prompt], params)[0].token_ids  # prefix from the device cache
        kv.flush()
        kv.drop_device_cache()
        from_l2 = llm.generate([prompt], params)[0].token_ids  # the same prefix loaded back from host
        kv.flush()
        loads = llm.engine.stats()["tiers"]["loads"]
        ceiling = pinned_h2d_gbps(loads["bytes"])
        rows.append((backend, loads["batches"], loads["bytes"] / 2**30, loads["seconds"] * 1e3, loads["gbps"], ceiling,
                     from_l1 == from_l2 and len(from_l1) == 1))
        llm.close()
        del llm
        torch.cuda.empty_cache()
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; prompt {args.tokens} tokens")
    print(f"{'backend':<8}{'loads':>6}{'GiB':>8}{'ms':>9}{'GB/s':>8}{'pinned GB/s':>13}{'% pinned':>10}"
          f"{'L1 == L2':>10}")
    for backend, n, gib, ms, gbps, ceil, same in rows:
        print(f"{backend:<8}{n:>6}{gib:>8.2f}{ms:>9.1f}{gbps:>8.1f}{ceil:>13.1f}{100 * gbps / ceil:>9.1f}%"
              f"{str(same):>10}")


if __name__ == "__main__":
    main()
