"""CPU benchmark of the L3 stores against the machine they run on, in one run.

File store: write and read GB/s of `FileKVStore` (pages of a Llama-3.1-8B shape, bf16, 16-token pages =
2 MiB, `batch_set`/`batch_get` calls of 32 pages = 64 MiB, as the engine's fetches make them) against a raw sequential
write and read of the same volume on the same file system, dd-style: 8 MiB blocks, buffered and
O_DIRECT, each write ended by fdatasync. The better raw figure of each direction is the reference. Before
every read the page cache is dropped if this process may (root); otherwise every read uses O_DIRECT so
that neither side reads from memory (and the table says so).

Redis store: `RedisKVStore` SET/GET GB/s against `redis-benchmark` SET/GET with the same value size (an
encoded page) on the same redis-server, which this script starts on a free loopback port and stops by
PID at the end. redis-benchmark SETs as many values as the store has pages, each under a new key as the
store's are (into an empty database, from a random keyspace so large that keys do not repeat: with `-r`
equal to the request count a third of its SETs would overwrite a key set before, which costs the server
less than storing a new one), and GETs that many keys that were all set before, so every GET hits. The
reference is the better of one connection and as many connections as the store uses (`-c`, one request in
flight each).

Each figure is the median of `--reps` runs; the runs of a store and of its reference alternate. Prints a
Markdown table with the ratios (targets: file >= 80%, Redis >= 70%).
Usage: `PYTHONPATH=. python benchmarks/bench_store_io.py [--dir DIR] [--gib 2] [--redis-gib 1]`.
"""
from __future__ import annotations

import argparse
import mmap
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: `tests.redis_server`

import torch  # noqa: E402

from tierlm.kvcache.host_pool import HostKVPool  # noqa: E402
from tierlm.kvcache.layout import KVLayout  # noqa: E402
from tierlm.kvcache.stores.base import encoded_size, pages_per_call  # noqa: E402
from tierlm.kvcache.stores.file import FileKVStore  # noqa: E402

BLOCK = 8 << 20  # dd's bs of the raw reference


def drop_page_cache() -> bool:
    """Write dirty pages and drop the page cache; False where this process may not."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def aligned(n: int) -> memoryview:
    buf = mmap.mmap(-1, n)
    view = memoryview(buf)
    view[:] = os.urandom(1 << 20) * (n >> 20) + os.urandom(n % (1 << 20))
    return view


def raw_write(path: Path, nbytes: int, direct: bool, block: memoryview) -> float:
    """Seconds to write `nbytes` sequentially and fdatasync them (dd bs=8M conv=fdatasync [oflag=direct])."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)
    t0 = time.perf_counter()
    fd = os.open(path, flags, 0o644)
    try:
        for off in range(0, nbytes, BLOCK):
            os.pwrite(fd, block, off)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def raw_read(path: Path, direct: bool, block: memoryview) -> float:
    """Seconds to read the file sequentially (dd bs=8M [iflag=direct])."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    try:
        off = 0
        while (n := os.preadv(fd, [block], off)) > 0:
            off += n
    finally:
        os.close(fd)
    return time.perf_counter() - t0


LAYOUTS = {"llama-3.1-8b": lambda: KVLayout.gqa(32, 8, 128, torch.bfloat16),
           # MLA: one latent of 576 per token and layer; a 16-token page is not a whole number of 4 KiB blocks
           "deepseek-v2-lite": lambda: KVLayout.latent(27, 576, torch.bfloat16)}


def make_host(nbytes: int, page_tokens: int, shape: str = "llama-3.1-8b") -> HostKVPool:
    layout = LAYOUTS[shape]()
    pages = max(32, nbytes // layout.page_bytes(page_tokens))
    host = HostKVPool(pages, layout, page_tokens)
    block = torch.randint(0, 256, (64 << 20,), dtype=torch.uint8)
    flat = host.buffer.view(-1)
    for off in range(0, flat.numel(), block.numel()):
        flat[off:off + block.numel()] = block[:flat.numel() - off]
    host.buffer[:, :8] = torch.arange(pages, dtype=torch.int64).view(torch.uint8).view(pages, 8)  # distinct pages
    return host


def keys_for(n: int, salt: int) -> list[str]:
    return [f"{salt:08x}{i:056x}" for i in range(n)]


def in_calls(fn: Callable, keys: list[str], call_pages: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(keys), call_pages):
        ok = fn(keys[i:i + call_pages], list(range(i, min(i + call_pages, len(keys)))))
        if not all(ok):
            raise SystemExit(f"store call failed: {sum(ok)}/{len(ok)} pages")
    return time.perf_counter() - t0


def raw_pass(raw_file: Path, nbytes: int, block: memoryview, can_drop: bool, res: dict) -> None:
    for mode, direct in (("buf", False), ("dir", True)):
        res[f"raw_w_{mode}"].append(nbytes / raw_write(raw_file, nbytes, direct, block))
        if can_drop:
            drop_page_cache()
        elif not direct:  # a buffered read right after the write would read memory
            continue
        res[f"raw_r_{mode}"].append(nbytes / raw_read(raw_file, direct, block))
    raw_file.unlink()


def store_pass(d: Path, host: HostKVPool, keys: list[str], call_pages: int, sums: list[int], res: dict,
               block: memoryview) -> bool:
    """One write and one read (after a restart) of the file store, then a dd-style read of its own segment
    files (`segs_r`: how fast one dd-style stream reads back data written as the store writes it); whether it used
    O_DIRECT."""
    nbytes = len(keys) * encoded_size(host.bytes_per_page)
    s = FileKVStore(d, 1 << 40)
    s.attach(host)
    res["store_w"].append(nbytes / in_calls(s.batch_set, keys, call_pages))
    s.close()
    drop_page_cache()
    t0 = time.perf_counter()
    s = FileKVStore(d, 1 << 40)  # a restart: the index comes from the segments' tables
    res["index"].append(time.perf_counter() - t0)
    s.attach(host)
    host.buffer.zero_()
    res["store_r"].append(nbytes / in_calls(s.batch_get, keys, call_pages))
    if [zlib.crc32(host.page_bytes(p)) for p in range(len(keys))] != sums:
        raise SystemExit("file store read back different bytes")
    s.close()
    segments = [f for f in d.iterdir() if f.is_file()]
    drop_page_cache()
    seconds = sum(raw_read(f, s.direct, block) for f in segments)
    res["segs_r"].append(sum(f.stat().st_size for f in segments) / seconds)
    shutil.rmtree(d)
    return s.direct


def bench_file(args, host: HostKVPool, rows: list) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    n = host.num_pages
    nbytes = n * host.bytes_per_page
    block = aligned(BLOCK)
    can_drop = drop_page_cache()
    res: dict[str, list[float]] = {k: [] for k in ("raw_w_buf", "raw_w_dir", "raw_r_buf", "raw_r_dir",
                                                   "store_w", "store_r", "segs_r", "index")}
    sums = [zlib.crc32(host.page_bytes(p)) for p in range(n)]
    try:
        for rep in range(args.reps):  # alternate which goes first
            if rep % 2 == 0:
                raw_pass(root / "raw.bin", nbytes, block, can_drop, res)
            direct = store_pass(root / f"kv{rep}", host, keys_for(n, rep), args.call_pages, sums, res, block)
            if rep % 2 == 1:
                raw_pass(root / "raw.bin", nbytes, block, can_drop, res)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) / 1e9 for k, v in res.items() if v and k != "index"}
    ref_w = max(med["raw_w_buf"], med["raw_w_dir"])
    ref_r = max(med.get("raw_r_buf", 0.0), med["raw_r_dir"])
    how = ("page cache dropped before each read" if can_drop
           else "page cache NOT dropped (no permission): O_DIRECT reads only")
    print(f"file store: {n} pages x {host.bytes_per_page / 2**20:.2f} MiB = {nbytes / 2**30:.2f} GiB per run, calls of "
          f"{args.call_pages} pages, O_DIRECT {'on' if direct else 'off'}; {how}; index rebuild "
          f"{statistics.median(res['index']) * 1e3:.0f} ms")
    rows.append(("file write", med["store_w"], ref_w,
                 f"raw write + fdatasync: buffered {med['raw_w_buf']:.2f}, O_DIRECT {med['raw_w_dir']:.2f}", 0.8))
    raw_r = (f"buffered {med['raw_r_buf']:.2f}, " if "raw_r_buf" in med else "") + f"O_DIRECT {med['raw_r_dir']:.2f}"
    rows.append(("file read", med["store_r"], ref_r, f"raw read: {raw_r}", 0.8))
    print(f"the store's own segment files read dd-style afterwards ({BLOCK >> 20} MiB blocks"
          f"{', O_DIRECT' if direct else ''}, one stream): {med['segs_r']:.2f} GB/s; the store read "
          f"{med['store_r'] / med['segs_r']:.0%} of that (its I/O threads keep several reads in flight)")



def bench_redis(args, host: HostKVPool, rows: list) -> None:
    from store_io_redis import reference_pass
    from tests.redis_server import RedisServer
    from tierlm.kvcache.stores.redis import RedisKVStore

    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        raise SystemExit("redis-server and redis-benchmark are needed (apt-get install redis-server)")
    n = host.num_pages
    value = encoded_size(host.bytes_per_page)
    settings = [(1, 1), (args.redis_connections, 1)]
    work = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    try:
        server = RedisServer(work)
    except RuntimeError as e:
        raise SystemExit(str(e))
    port = server.port
    res: dict[str, list[float]] = {"set": [], "get": [], **{f"rb_{c}_{p}": [] for c, p in settings}}
    sums = [zlib.crc32(host.page_bytes(p)) for p in range(n)]
    try:
        store = RedisKVStore(f"redis://127.0.0.1:{port}/0", timeout=args.redis_timeout,
                             connections=args.redis_connections)
        store.attach(host)
        for rep in range(args.reps):  # alternate which goes first
            if rep % 2 == 0:
                reference_pass(port, value, n, settings, res)
            keys = keys_for(n, rep)
            res["set"].append(n * value / in_calls(store.batch_set, keys, args.call_pages))
            host.buffer.zero_()
            res["get"].append(n * value / in_calls(store.batch_get, keys, args.call_pages))
            if [zlib.crc32(host.page_bytes(p)) for p in range(n)] != sums:
                raise SystemExit("Redis store read back different bytes")
            store.clear()
            if rep % 2 == 1:
                reference_pass(port, value, n, settings, res)
        store.close()
    finally:
        server.kill()  # ours, by PID
        shutil.rmtree(work, ignore_errors=True)
    ref = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
           for k, v in res.items() if k.startswith("rb_")}
    best_set = max(ref, key=lambda k: ref[k][0])
    best_get = max(ref, key=lambda k: ref[k][1])

    def label(k: str) -> str:
        c, p = k.split("_")[1:]
        return f"-c {c} -P {p}"

    print(f"redis: {n} values x {value} bytes = {n * value / 2**30:.2f} GiB per run, calls of {args.call_pages} "
          f"pages over {args.redis_connections} connections; redis-benchmark GB/s (SET, GET): "
          + ", ".join(f"{label(k)}: {s:.2f}, {g:.2f}" for k, (s, g) in ref.items()))
    rows.append(("redis SET", statistics.median(res["set"]) / 1e9, ref[best_set][0],
                 f"redis-benchmark SET -d {value} {label(best_set)}", 0.7))
    rows.append(("redis GET", statistics.median(res["get"]) / 1e9, ref[best_get][1],
                 f"redis-benchmark GET -d {value} {label(best_get)}", 0.7))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=None, help="where the file store and the raw file go (default: the temp dir)")
    ap.add_argument("--gib", type=float, default=2.0, help="volume of each file-store run")
    ap.add_argument("--redis-gib", type=float, default=1.0, help="volume of each Redis run")
    ap.add_argument("--page-tokens", type=int, default=16, help="tokens per page (16 = 2 MiB pages)")
    ap.add_argument("--shape", choices=sorted(LAYOUTS), default="llama-3.1-8b",
                    help="whose KV pages (deepseek-v2-lite: MLA pages that are not whole 4 KiB blocks)")
    ap.add_argument("--call-pages", type=int, default=None,
                    help="pages per batch_set/batch_get call (default: the engine's fetch call, about 64 MiB)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--redis-connections", type=int, default=4, help="connections of the Redis store")
    ap.add_argument("--redis-timeout", type=float, default=2.0, help="the store's --kv-store-timeout")
    ap.add_argument("--skip", choices=("file", "redis"), default=None)
    args = ap.parse_args()
    if args.dir is not None and not os.path.isdir(args.dir):
        ap.error(f"--dir: {args.dir} is not a directory")
    if args.call_pages is None:
        args.call_pages = pages_per_call(LAYOUTS[args.shape]().page_bytes(args.page_tokens))
    if min(args.gib, args.redis_gib) <= 0 or min(args.page_tokens, args.call_pages, args.reps) < 1:
        ap.error("--gib, --redis-gib, --page-tokens, --call-pages and --reps must be positive")
    rows: list = []
    print(f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.1f}")
    if args.skip != "file":
        bench_file(args, make_host(int(args.gib * 2**30), args.page_tokens, args.shape), rows)
    if args.skip != "redis":
        bench_redis(args, make_host(int(args.redis_gib * 2**30), args.page_tokens, args.shape), rows)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    print("\n| path | store GB/s | reference GB/s | reference | ratio | target |")
    print("|---|---|---|---|---|---|")
    for name, got, ref, what, target in rows:
        ratio = got / ref
        print(f"| {name} | {got:.2f} | {ref:.2f} | {what} | {ratio:.0%} | >= {target:.0%} "
              f"{'met' if ratio >= target else 'NOT met'} |")


if __name__ == "__main__":
    main()
