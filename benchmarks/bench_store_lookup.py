"""CPU benchmark: what the file store's lookup (`batch_exists`) of one arriving request costs its thread.

Every request that arrives at an engine with an L3 store asks the store which of its prompt's pages it holds,
on a lookup thread that holds the GIL while it runs Python, beside the scheduler's thread. This script fills
a `FileKVStore` with `--segments` segment files of `--pages-per-segment` small pages, then times lookups of
`--keys` keys of which the first half are stored (a prompt whose prefix the store holds: the lookup misses),
right after another engine's write (the directory's listing is then not trusted) and later; it prints the
thread time per lookup and the directory listings made. Usage:
`PYTHONPATH=. python benchmarks/bench_store_lookup.py [--segments 800] [--lookups 200]`.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import torch

from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.stores import segment_index
from tierlm.kvcache.stores.file import FileKVStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=800)
    ap.add_argument("--pages-per-segment", type=int, default=16)
    ap.add_argument("--keys", type=int, default=128, help="pages of the looked-up prompt (default: 128)")
    ap.add_argument("--lookups", type=int, default=200)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="tierlm-lookup-")
    try:
        host = HostKVPool(args.pages_per_segment, KVLayout.gqa(1, 1, 8, torch.float16), page_size=16)
        writer = FileKVStore(root, max_bytes=1 << 40, fsync=False)
        writer.attach(host)
        n = args.segments * args.pages_per_segment
        keys = [f"{i:064x}" for i in range(1, n + args.keys + 1)]
        for s in range(args.segments):
            part = keys[s * args.pages_per_segment:(s + 1) * args.pages_per_segment]
            writer.batch_set(part, list(range(len(part))))
        reader = FileKVStore(root, max_bytes=1 << 40, fsync=False)
        reader.attach(host)
        half = args.keys // 2
        query = keys[n - half:n] + keys[n:n + args.keys - half]  # stored, then not
        listings = []
        real = segment_index.listdir
        segment_index.listdir = lambda path: listings.append(path) or real(path)
        print(f"{args.segments} segments, lookups of {args.keys} keys ({half} stored)")
        print(f"{'when':<36}{'ms per lookup':>14}{'listings':>10}")
        for when in ("just after another engine's write", "the directory quiet for 1.1 s"):
            if when.startswith("just"):
                writer.batch_set(keys[-1:], [0])
            else:
                time.sleep(1.1)
                reader.batch_exists(query)  # the listing made now is trusted
            listings.clear()
            t0 = time.thread_time()
            for _ in range(args.lookups):
                assert reader.batch_exists(query) == half
            ms = (time.thread_time() - t0) / args.lookups * 1e3
            print(f"{when:<36}{ms:>14.3f}{len(listings):>10}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
