"""Host time the KV controller spends per request on the scheduler's thread: +L2 against +L2 with a file L3.

Each request arrives (`prefetch_start`: its L3 lookup), is admitted, grows by an answer and is released into
the prefix cache (its backup decided and run), with prompts of the Llama-3.1-8B shape's page count (2,048
tokens, 16-token pages, nothing shared). CPU pools, so only the controller's own work is timed; it is work
that sits between one wave of requests finishing and the next one's first prefill. Prints milliseconds per
request per call, for alternating runs.

Usage: PYTHONPATH=. python benchmarks/bench_controller.py [--requests 64] [--prompt 2048] [--runs 2]
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time

import torch

from tierlm.kvcache.contracts import TierSetup, Verdict
from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.manager import KVCacheManager
from tierlm.kvcache.pool import KVPool
from tierlm.kvcache.stores.file import FileKVStore
from tierlm.kvcache.tier_io import TierIO
from tierlm.kvcache.transfer import PageTransfer

PAGE = 16
CALLS = ("arrive", "admit", "release", "plan")


def build(with_store: bool, pages: int, store_dir: str) -> KVCacheManager:
    layout = KVLayout.gqa(1, 1, 1, torch.float32)
    pool = KVPool(layout, pages, PAGE, torch.device("cpu"))
    host = HostKVPool(pages * 2, layout, PAGE)
    store = FileKVStore(store_dir, 1 << 30) if with_store else None
    if store is not None:
        store.attach(host)
    io = TierIO(PageTransfer(pool, host, "torch"), store)
    hasher = PageHasher("f" * 64, PAGE) if with_store else None
    return KVCacheManager(pages, PAGE, 16, True, TierSetup(host_pages=pages * 2, page_bytes=pool.bytes_per_page,
                                                           io=io, store=store, hasher=hasher,
                                                           storage_write_policy="auto"))


def run(with_store: bool, n: int, prompt: int, answer: int) -> dict:
    with tempfile.TemporaryDirectory() as store_dir:
        return _run(build(with_store, 4 * (prompt + answer) // PAGE, store_dir), n, prompt, answer)


def _run(kv: KVCacheManager, n: int, prompt: int, answer: int) -> dict:
    rng = random.Random(0)
    spent = dict.fromkeys(CALLS, 0.0)
    try:
        for i in range(n):
            tokens = [rng.randrange(100000) for _ in range(prompt)]
            t = time.perf_counter()
            kv.prefetch_start(str(i), tokens)
            spent["arrive"] += time.perf_counter() - t
            while True:
                kv.poll()
                t = time.perf_counter()
                got = kv.admit(str(i), tokens, prompt + 1, prompt + answer, 0)
                spent["admit"] += time.perf_counter() - t
                if not isinstance(got, Verdict):
                    break
                kv.flush()  # a lookup still running, or room behind a backup: not the controller's time
            pages = list(got.pages)
            kv.grow(pages, prompt + answer)
            out = tokens + [rng.randrange(100000) for _ in range(answer)]
            t = time.perf_counter()
            kv.release(got.row, out, pages, got.node, got.num_prefix_pages, cache=True)
            spent["release"] += time.perf_counter() - t
            t = time.perf_counter()
            copies = kv.take_copies()
            for c in copies.backups:
                kv.io.backup(c.device_pages, c.host_pages, c.keys, c.ticket)
            spent["plan"] += time.perf_counter() - t
            kv.flush()
    finally:
        kv.close()
    return {k: v / n * 1e3 for k, v in spent.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--prompt", type=int, default=2048)
    p.add_argument("--answer", type=int, default=64)
    p.add_argument("--runs", type=int, default=2)
    args = p.parse_args()
    print(f"ms per request on the scheduler's thread ({args.requests} requests of {args.prompt} + {args.answer} "
          f"tokens, {PAGE}-token pages)")
    print(f"{'tiers':<10}" + "".join(f"{c:>9}" for c in CALLS) + f"{'total':>9}")
    for _ in range(args.runs):
        for with_store in (False, True):
            ms = run(with_store, args.requests, args.prompt, args.answer)
            print(f"{'+L2+L3' if with_store else '+L2':<10}" + "".join(f"{ms[c]:9.3f}" for c in CALLS)
                  + f"{sum(ms.values()):9.3f}")


if __name__ == "__main__":
    main()
