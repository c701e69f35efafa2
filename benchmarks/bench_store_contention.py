"""CPU benchmark: the file store's read rate beside a busy Python thread, at several thread switch intervals.

An engine's scheduler thread runs Python most of the time. Every store call that releases the GIL (`preadv`,
a page's CRC-32) must take it back before going on, and a thread that asks for the GIL while another runs
Python waits up to the interpreter's switch interval (`sys.setswitchinterval`, 5 ms by default). This
script writes `--gib` of 2 MiB pages (Llama-3.1-8B shape) to a `FileKVStore`, then reads them back in calls
of 32 pages, alone and beside a thread that only runs Python, for each interval; it prints the read GB/s and
the busy thread's progress as a share of its rate alone. `TierIO` sets `IO_SWITCH_INTERVAL_S` for this.
Usage: `PYTHONPATH=. python benchmarks/bench_store_contention.py [--dir DIR] [--gib 1]`.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_store_io import in_calls, keys_for, make_host  # noqa: E402

from tierlm.kvcache.stores.file import FileKVStore  # noqa: E402
from tierlm.kvcache.tier_io import IO_SWITCH_INTERVAL_S  # noqa: E402


class Busy:
    """A thread that runs Python until stopped, counting its rounds."""

    def __init__(self) -> None:
        self.rounds, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        x = 0
        while not self._stop.is_set():
            for i in range(1000):
                x += i
            self.rounds += 1

    def __enter__(self) -> "Busy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="directory for the store (default: a temporary one)")
    ap.add_argument("--gib", type=float, default=1.0, help="GiB of pages written and read")
    args = ap.parse_args()
    if args.dir is not None and not Path(args.dir).is_dir():
        ap.error(f"--dir: {args.dir} is not a directory")
    host = make_host(int(args.gib * (1 << 30)), 16)
    keys = keys_for(host.num_pages, 1)
    nbytes = host.num_pages * host.bytes_per_page
    root = Path(tempfile.mkdtemp(prefix="bench-contention-", dir=args.dir))
    store = FileKVStore(root, 1 << 40)
    store.attach(host)
    old = sys.getswitchinterval()
    try:
        in_calls(store.batch_set, keys, 32)
        with Busy() as busy:
            time.sleep(1.0)
        solo = busy.rounds / 1.0
        print("| switch interval | read GB/s alone | read GB/s beside a busy thread | busy thread's rate |")
        print("|---|---|---|---|")
        for interval in sorted({0.005, 0.001, IO_SWITCH_INTERVAL_S, 0.0002}, reverse=True):
            sys.setswitchinterval(interval)
            alone = nbytes / in_calls(store.batch_get, keys, 32)
            with Busy() as busy:
                t0 = time.perf_counter()
                secs = in_calls(store.batch_get, keys, 32)
                share = busy.rounds / (time.perf_counter() - t0) / solo
            print(f"| {interval * 1e3:.1f} ms | {alone / 1e9:.2f} | {nbytes / secs / 1e9:.2f} | {share:.0%} |")
        print("(reads after writes in this process may come from the page cache: the figures compare intervals, "
              "not the disk)")
    finally:
        sys.setswitchinterval(old)
        store.close()
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
