"""CPU benchmark: what an eviction costs the scheduler's thread as the radix tree grows, the kept candidate
heap (`tierlm.kvcache.candidates`) against listing the whole tree at every eviction, in one run.

A tiered KV cache (device and host tiers, CPU pools) is filled with N cached three-page prefixes, one node
each; then, as a server under pressure does, every step admits and releases one new prefix (which touches
the tree and needs room) and evicts three pages from each tier. Reported per tree size: microseconds per
step for each way, their ratio, and how many full scans the heap made.
Usage: `PYTHONPATH=. python benchmarks/bench_eviction.py [--nodes 1000,5000,20000] [--steps 2000]`.
"""
from __future__ import annotations

import argparse
import time

from tests.kvcache.tiers import make_tiered, run_copies
from tierlm.kvcache.manager import KVCacheManager


def cache(kv: KVCacheManager, i: int) -> None:
    tokens = [i // 1000, i % 1000, i // 7, 3, 4, 5]
    got = kv.admit(str(i), tokens, 6, 6, 0)
    assert got is not None and kv.grow(got.pages, 6)
    kv.release(got.row, tokens, got.pages, got.node, 0, cache=True)
    run_copies(kv)


def run(nodes: int, steps: int, full_scan: bool) -> tuple[float, int]:
    """Microseconds per step (admit, release, evict from both tiers) over `steps` steps, and the heap's
    scans during them."""
    kv, _, _ = make_tiered(2, 3 * nodes + 64, 3 * nodes + 64, max_reqs=8, threads=False)
    try:
        heaps = (kv.evictor.device_candidates, kv.evictor.host_candidates)
        for heap in heaps:
            heap.rescan_below = 1 << 62 if full_scan else heap.rescan_below
        for i in range(nodes):
            cache(kv, i)
        kv.evict(3)
        kv.evict_host(3)
        scans = sum(h.scans for h in heaps)
        t0 = time.perf_counter()
        for i in range(nodes, nodes + steps):
            cache(kv, i)
            kv.evict(3)
            kv.evict_host(3)
        elapsed = time.perf_counter() - t0
        kv.check_no_leak()
        return 1e6 * elapsed / steps, sum(h.scans for h in heaps) - scans
    finally:
        kv.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", default="1000,5000,20000", help="Tree sizes (cached prefixes), comma-separated.")
    p.add_argument("--steps", type=int, default=2000, help="Steps timed per tree size and way.")
    args = p.parse_args()
    print(f"{'nodes':>8} {'full scan us/step':>18} {'heap us/step':>13} {'ratio':>7} {'heap scans':>11}")
    for n in (int(x) for x in args.nodes.split(",")):
        full, _ = run(n, args.steps, True)
        kept, scans = run(n, args.steps, False)
        print(f"{n:>8} {full:>18.0f} {kept:>13.0f} {full / kept:>6.1f}x {scans:>11}")


if __name__ == "__main__":
    main()
