"""CPU benchmark: what the file store's reads cost the engine's scheduler thread, record-by-record reads
against vectored runs, in one run.

A background thread reads pages back from a `FileKVStore` (Llama-3.1-8B-shaped 2 MiB pages, buffered I/O
so that host memory alignment does not matter; `batch_get` calls of 32 pages, page cache warm) while
the main thread runs a pure-Python loop standing in for the scheduler. Reported per read path: the store's
read GB/s and how much slower the main loop ran than alone (GIL hand-offs). The record-by-record path is
the store's reads before vectored runs (one job, one `preadv` and one checksum per page).
Usage: `PYTHONPATH=. python benchmarks/bench_store_gil.py [--dir DIR] [--pages 256] [--reps 3]`.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

import torch

from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.stores import file as file_mod
from tierlm.kvcache.stores import record_io
from tierlm.kvcache.stores.file import FileKVStore

PAGE_BYTES = 2 << 20
CALL_PAGES = 32


def make_host(pages: int) -> HostKVPool:
    """Host pages of the Llama-3.1-8B shape (16 tokens: 2 MiB), filled with random bytes."""
    host = HostKVPool(pages, KVLayout.gqa(32, 8, 128, torch.bfloat16), 16)
    host.buffer.copy_(torch.randint(0, 256, host.buffer.shape, dtype=torch.uint8))
    return host


def python_loop(n: int = 2_000_000) -> float:
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - t0


def one_by_one(store: FileKVStore) -> None:
    """The store's reads before vectored runs: a job per page."""
    store._read_pieces = lambda items: [[item] for item in items]
    file_mod.read_records = lambda fd, entries, dests, direct, scratch, align: [
        record_io.read_record(fd, e, d, direct, scratch, align) for e, d in zip(entries, dests)]


def measure(store: FileKVStore, keys: list[str], pages: int) -> tuple[float, float]:
    """(read GB/s, main-loop time with reads running / alone)."""
    alone = python_loop()
    done, nbytes, t = threading.Event(), [0], [0.0]

    def reader() -> None:
        t0 = time.perf_counter()
        while not done.is_set():
            for i in range(0, pages, CALL_PAGES):
                ok = store.batch_get(keys[i:i + CALL_PAGES], list(range(pages + i, pages + i + CALL_PAGES)))
                nbytes[0] += sum(ok) * PAGE_BYTES
        t[0] = time.perf_counter() - t0

    th = threading.Thread(target=reader)
    th.start()
    time.sleep(0.2)
    loaded = python_loop()
    done.set()
    th.join()
    return nbytes[0] / t[0] / 1e9, loaded / alone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="where the store goes (default: the temp dir)")
    ap.add_argument("--pages", type=int, default=256, help="pages written, then read back in calls of 32")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    host = make_host(2 * args.pages)
    assert host.bytes_per_page == PAGE_BYTES
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        store = FileKVStore(d, 4 * args.pages * PAGE_BYTES, direct=False)
        store.attach(host)
        keys = [f"{i:064x}" for i in range(1, args.pages + 1)]
        for i in range(0, args.pages, CALL_PAGES):
            store.batch_set(keys[i:i + CALL_PAGES], list(range(i, i + CALL_PAGES)))
        old = FileKVStore(d, 4 * args.pages * PAGE_BYTES, direct=False)
        old.attach(host)
        real = file_mod.read_records
        rows = {"vectored runs": [], "record by record": []}
        for _ in range(args.reps):
            file_mod.read_records = real
            rows["vectored runs"].append(measure(store, keys, args.pages))
            one_by_one(old)
            rows["record by record"].append(measure(old, keys, args.pages))
        file_mod.read_records = real
        store.close()
        old.close()
    print(f"| read path | read GB/s | main loop slowdown |\n|---|---|---|")
    for name, runs in rows.items():
        print(f"| {name} | {statistics.median(r[0] for r in runs):.2f} | "
              f"{statistics.median(r[1] for r in runs):.2f}x |")


if __name__ == "__main__":
    main()
