"""GPU check of the KV tiers: greedy outputs served from L2 equal those computed from scratch, per I/O backend.

For each `--hicache-io-backend` (auto, jit, dma, torch; see tierlm/kvcache/transfer.py) a tiny random Qwen3 in
fp32 on CUDA serves a set of long prompts, drops every device copy (host copies stay), and serves them again
plus longer follow-ups that extend them (so loads and fresh prefill share a batch). Outputs must equal a run
without any cache, the L2 counters must show the loads, and no device or host page may leak. Prints one line per
backend; exits 1 on any mismatch.

    python benchmarks/gpu_tier_check.py
"""
from __future__ import annotations

import random
import sys
import tempfile

import torch

from tierlm import LLM, SamplingParams
from tierlm.utils.tiny_model import make_tiny_model


def main() -> int:
    rng = random.Random(0)
    base = [[rng.randrange(1, 500) for _ in range(rng.randint(40, 300))] for _ in range(12)]
    follow = [p + [rng.randrange(1, 500) for _ in range(rng.randint(1, 50))] for p in base]
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, detokenize=False)
    common = dict(dtype="float32", kv_cache_gb=0.05, page_size=16, max_prefill_tokens=1024)
    ok = True
    with tempfile.TemporaryDirectory() as d:
        path = str(make_tiny_model(f"{d}/qwen3", arch="qwen3"))
        ref_llm = LLM(path, enable_prefix_cache=False, **common)
        ref = [o.token_ids for o in ref_llm.generate(base + follow, params)]
        ref_llm.close()
        for backend in ("auto", "jit", "dma", "torch"):
            llm = LLM(path, enable_hicache=True, hicache_io_backend=backend, hicache_load_policy="always-load",
                      **common)  # every hit loaded: this checks the load paths
            kv = llm.engine.kv
            first = [o.token_ids for o in llm.generate(base, params)]
            kv.drop_device_cache()
            again = [o.token_ids for o in llm.generate(base + follow, params)]
            kv.flush()
            kv.check_no_leak(llm.engine.live_pages())
            stats = llm.engine.stats()
            l2 = stats["tier_hits"]["L2"]["tokens"]
            loads = stats["tiers"]["loads"]
            same = first == ref[:len(base)] and again == ref
            print(f"{backend:>5}: outputs identical {same}; L2 tokens {l2}; load batches {loads['batches']}, "
                  f"{loads['bytes'] / 2**20:.1f} MiB; backend in use {stats['tiers']['L2']['io_backend']}")
            ok &= same and l2 > 0
            llm.close()
            torch.cuda.empty_cache()
    print("tier check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
