"""KV page transfer on the GPU: correctness of the JIT kernels vs the torch reference, then bandwidth
against a plain pinned host<->device copy (cudaMemcpyAsync of one contiguous buffer of the same size), and
of the Triton copy kernel (`tierlm.kernels.kv_pages`) beside it.

Pool shaped like Qwen3-0.6B: 28 layers, 8 KV heads, head_dim 128, bf16. Pages are random permutations.

    python benchmarks/bench_kv_transfer.py [--page-sizes 16 64] [--batches 256 1024] [--sweep] [--out f.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.timing import gqa_transfer, median_seconds  # noqa: E402
from tierlm.jit import kv_transfer as kvt  # noqa: E402

LAYERS, HEADS, HEAD_DIM, DTYPE = 28, 8, 128, torch.bfloat16


def make_pools(dev_pages: int, host_pages: int, ps: int, fill: bool):
    shape = (dev_pages * ps, HEADS, HEAD_DIM)
    new = (lambda: torch.randn(shape, device="cuda", dtype=DTYPE)) if fill else \
        (lambda: torch.empty(shape, device="cuda", dtype=DTYPE))
    k, v = [new() for _ in range(LAYERS)], [new() for _ in range(LAYERS)]
    host = torch.empty((host_pages, LAYERS, 2, ps, HEADS, HEAD_DIM), dtype=DTYPE, pin_memory=True)
    if fill:
        host.copy_(torch.randn(host.shape, dtype=torch.float32).to(DTYPE))
    return k, v, host


def check_correctness(ps: int) -> bool:
    """Both directions, JIT and Triton vs torch backend, random data, odd batch size, pages in random order."""
    k, v, host = make_pools(97, 83, ps, fill=True)
    n = 61
    dev_ids = torch.randperm(97)[:n].tolist()
    host_ids = torch.randperm(83)[:n].tolist()
    ok = True
    host_ref = host.clone().pin_memory()
    gqa_transfer(k, v, host, "jit").device_to_host(dev_ids, host_ids)
    gqa_transfer(k, v, host_ref, "torch").device_to_host(dev_ids, host_ids)
    torch.cuda.synchronize()
    ok &= torch.equal(host, host_ref)
    host_t = torch.zeros_like(host).pin_memory()  # the same copies by the Triton kernel
    gqa_transfer(k, v, host_t, "triton").device_to_host(dev_ids, host_ids)
    k2, v2 = [t.clone() for t in k], [t.clone() for t in v]
    k3, v3 = [t.clone() for t in k], [t.clone() for t in v]
    gqa_transfer(k, v, host, "jit").host_to_device(dev_ids[::-1], host_ids)
    gqa_transfer(k2, v2, host, "torch").host_to_device(dev_ids[::-1], host_ids)
    gqa_transfer(k3, v3, host, "triton").host_to_device(dev_ids[::-1], host_ids)
    torch.cuda.synchronize()
    ok &= all(torch.equal(a, b) for a, b in zip(k + v, k2 + v2))
    ok &= torch.equal(host_t[host_ids], host_ref[host_ids]) and all(torch.equal(a, b) for a, b in zip(k3 + v3, k2 + v2))
    # Spot check against the layout definition itself, independent of both backends.
    d, h = dev_ids[-1], host_ids[0]  # host_ids[0] was written from dev_ids[-1] by the reversed H2D
    ok &= (torch.equal(k[5][d * ps:(d + 1) * ps].cpu(), host[h, 5, 0])
           and torch.equal(v[27][d * ps:(d + 1) * ps].cpu(), host[h, 27, 1]))
    print(f"correctness page_size={ps}: {'PASS' if ok else 'FAIL'}", flush=True)
    return bool(ok)


def time_gbps(fn: Callable[[], None], nbytes: int, iters: int, warmup: int = 2) -> float:
    return nbytes / median_seconds(fn, iters, warmup) / 1e9


def bench_row(ps: int, batch: int, iters: int, with_torch: bool, sweep: bool) -> List[Dict]:
    k, v, host = make_pools(batch + 16, batch + 16, ps, fill=False)
    nbytes = batch * 2 * LAYERS * ps * HEADS * HEAD_DIM * 2
    dev_ids = torch.randperm(batch + 16)[:batch].tolist()
    host_ids = torch.randperm(batch + 16)[:batch].tolist()
    flat_dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    flat_host = host.view(-1).view(torch.uint8)[:nbytes]  # pinned, contiguous
    rows = []
    configs = [(kvt.DEFAULT_UNROLL, kvt.DEFAULT_BLOCKS_PER_SM)]
    if sweep:
        configs += [(u, b) for u in (2, 4, 8) for b in (4, 8, 16) if (u, b) != (4, 8)]
    for direction in ("d2h", "h2d"):
        if direction == "d2h":
            memcpy = time_gbps(lambda: flat_host.copy_(flat_dev, non_blocking=True), nbytes, iters)
        else:
            memcpy = time_gbps(lambda: flat_dev.copy_(flat_host, non_blocking=True), nbytes, iters)
        for unroll, bps in configs:
            t = gqa_transfer(k, v, host, "jit", unroll=unroll, blocks_per_sm=bps)
            fn = (lambda: t.device_to_host(dev_ids, host_ids)) if direction == "d2h" else \
                (lambda: t.host_to_device(dev_ids, host_ids))
            jit = time_gbps(fn, nbytes, iters)
            row = dict(direction=direction, page_size=ps, pages=batch, mbytes=round(nbytes / 2**20, 1),
                       unroll=unroll, blocks_per_sm=bps or 8, memcpy_gbps=round(memcpy, 2), jit_gbps=round(jit, 2),
                       ratio=round(jit / memcpy, 3))
            rows.append(row)
            print(json.dumps(row), flush=True)
        t = gqa_transfer(k, v, host, "triton")  # the copy kernel where ours cannot build
        fn = (lambda: t.device_to_host(dev_ids, host_ids)) if direction == "d2h" else \
            (lambda: t.host_to_device(dev_ids, host_ids))
        rows[-len(configs)]["triton_gbps"] = round(time_gbps(fn, nbytes, iters), 2)
        if with_torch:
            t = gqa_transfer(k, v, host, "torch")
            fn = (lambda: t.device_to_host(dev_ids, host_ids)) if direction == "d2h" else \
                (lambda: t.host_to_device(dev_ids, host_ids))
            rows[-len(configs)]["torch_gbps"] = round(time_gbps(fn, nbytes, 2, warmup=1), 2)
    del k, v, host, flat_dev
    torch.cuda.empty_cache()
    return rows


def versions() -> Dict[str, str]:
    import tvm_ffi
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": str(torch.version.cuda),
           "tvm_ffi": tvm_ffi.__version__}
    try:
        import triton
        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = "absent"
    try:
        version = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
        out["nvcc"] = version.strip().splitlines()[-2]
    except Exception:
        out["nvcc"] = "?"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--page-sizes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--sweep", action="store_true", help="also try other unroll / blocks-per-SM settings")
    ap.add_argument("--no-torch", action="store_true", help="skip timing the torch fallback")
    ap.add_argument("--out", help="write all rows as JSON here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device; nothing to measure")
        return 0
    info = versions()
    print(json.dumps(info), flush=True)
    ok = all(check_correctness(ps) for ps in args.page_sizes)
    rows: List[Dict] = []
    for ps in args.page_sizes:
        for batch in args.batches:
            rows += bench_row(ps, batch, args.iters, not args.no_torch, args.sweep and batch == args.batches[0])
    if args.out:
        Path(args.out).write_text(json.dumps({"info": info, "correct": ok, "rows": rows}, indent=1))
    default = [r for r in rows if r["unroll"] == kvt.DEFAULT_UNROLL and r["blocks_per_sm"] == 8]
    print(f"\n{info['device']} | torch {info['torch']} | tvm-ffi {info['tvm_ffi']} | correctness "
          f"{'PASS' if ok else 'FAIL'}")
    print(f"{'dir':4} {'page':>4} {'pages':>5} {'MiB':>7} {'memcpy GB/s':>11} {'jit GB/s':>9} {'jit/memcpy':>10} "
          f"{'triton GB/s':>11} {'torch GB/s':>10}")
    for r in default:
        print(f"{r['direction']:4} {r['page_size']:>4} {r['pages']:>5} {r['mbytes']:>7} {r['memcpy_gbps']:>11} "
              f"{r['jit_gbps']:>9} {r['ratio']:>10.1%} {r['triton_gbps']:>11} {r.get('torch_gbps', '-'):>10}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
