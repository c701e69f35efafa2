"""GPU benchmark: a batch-1 decode layer's next weight brought into L2 while the kernels between linears run.

At batch 1 a Llama-3.1-8B layer is four weight reads (QKV, O, gate/up, down) with short kernels between them
(rotary and decode attention between QKV and O, RMSNorms before QKV and gate/up) that leave HBM almost idle,
and every linear pays its own ramp and tail. Each read is at the best single-kernel rate of its size already
(`read_floor.py`), so the step can only get faster if some weight bytes arrive while no linear is reading.
This script chains the layer's linears (the engine's kernels at batch 1) with stand-ins for the kernels
between them (a few programs held for `--windows` microseconds, `bench_gemv_window.py`'s kernel), over
enough layers that every weight comes from HBM, in one CUDA graph, and times it with L2 prefetches of the
next linear's first bytes issued at chosen points:

- `--plans`: `none`, or `POINT>WEIGHT:MB[+...]`: after the kernel POINT (qkv, o, gu, down), prefetch the first MB
  of WEIGHT (o, gu, down, or qkv: the next layer's), e.g. `qkv>o:32` or `qkv>o:24+o>gu:16`;
- `--modes`: `side` (a prefetch kernel on a second stream forked after POINT: the chain does not wait for it),
  `inline` (a PDL-launched prefetch kernel in the chain after POINT, waiting for it first);
- `--methods`: `bulk` (`cp.async.bulk.prefetch.L2`, one instruction per `--chunk-kb`), `line`
  (`prefetch.global.L2`, one per 128-byte line).

Outputs are compared bit for bit with the chain without prefetches. Prints microseconds per layer.
Usage: `PYTHONPATH=. python benchmarks/bench_weight_prefetch.py [--plans ...] [--modes side,inline]`.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from benchmarks.bench_gemv_window import _window_kernel, parse_launch, time_graph
from tierlm.kernels.gemv import gemv, silu_mul_gemv
from tierlm.kernels.pdl import launch_kwargs

PLANS = "none,qkv>o:16,qkv>o:32,qkv>o:32+o>gu:16,qkv>o:32+o>gu:16+down>qkv:16"


@triton.jit
def _enter(PDL: tl.constexpr):
    """Under PDL, let the next kernel start, then wait for the one before (a prefetch in the chain must not
    compete with the linear it follows)."""
    if PDL:
        gdc_launch_dependents()
        gdc_wait()


@triton.jit
def _bulk_prefetch_kernel(src, nbytes, CHUNK: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
    """Ask L2 for bytes [0, nbytes) of `src` (bytes), CHUNK bytes per bulk prefetch, BLOCK per program."""
    _enter(PDL)
    offs = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64) * CHUNK
    size = tl.where(offs < nbytes, tl.minimum(nbytes - offs, CHUNK), 0).to(tl.int32)
    ptrs = src + tl.where(offs < nbytes, offs, 0)
    tl.inline_asm_elementwise(
        "{\n\t.reg .pred p;\n\tsetp.gt.s32 p, $2, 0;\n\t@p cp.async.bulk.prefetch.L2.global [$1], $2;\n\t"
        "mov.u32 $0, 0;\n\t}", "=r,l,r", [ptrs, size], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _line_prefetch_kernel(src, nbytes, BLOCK: tl.constexpr, ITERS: tl.constexpr, PDL: tl.constexpr):
    """Ask L2 for the 128-byte lines of bytes [0, nbytes) of `src`, BLOCK lines per iteration."""
    _enter(PDL)
    for i in range(ITERS):
        offs = ((tl.program_id(0) * ITERS + i) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64) * 128
        ptrs = src + tl.where(offs < nbytes, offs, 0)
        tl.inline_asm_elementwise("prefetch.global.L2::evict_last [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs],
                                  dtype=tl.int32, is_pure=False, pack=1)


def prefetch(weight: torch.Tensor, mb: float, method: str, inline: bool, chunk: int) -> None:
    """Launch one prefetch of the first `mb` MB of `weight` (all of it if smaller)."""
    raw = weight.view(-1).view(torch.uint8)
    nbytes = min(raw.numel(), int(mb * (1 << 20))) // 16 * 16
    kw = launch_kwargs(weight.device) if inline else {"PDL": False}
    if method == "bulk":
        block = 128
        grid = (triton.cdiv(nbytes, chunk * block),)
        _bulk_prefetch_kernel[grid](raw, nbytes, CHUNK=chunk, BLOCK=block, num_warps=4, **kw)
    else:
        block, iters = 512, 16
        grid = (triton.cdiv(nbytes, 128 * block * iters),)
        _line_prefetch_kernel[grid](raw, nbytes, BLOCK=block, ITERS=iters, num_warps=4, **kw)


def parse_plan(text: str) -> dict[str, list[tuple[str, float]]]:
    """{point: [(weight, MB), ...]} of a plan's text."""
    plan: dict[str, list[tuple[str, float]]] = {}
    if text == "none":
        return plan
    for part in text.split("+"):
        point, rest = part.split(">")
        weight, mb = rest.split(":")
        assert point in ("qkv", "o", "gu", "down") and weight in ("qkv", "o", "gu", "down"), part
        plan.setdefault(point, []).append((weight, float(mb)))
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plans", default=PLANS, help="comma list of prefetch plans (see above)")
    ap.add_argument("--modes", default="side,inline")
    ap.add_argument("--methods", default="bulk,line")
    ap.add_argument("--chunk-kb", type=int, default=16, help="bytes per bulk prefetch instruction, KiB")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--qkv", type=int, default=6144)
    ap.add_argument("--inter", type=int, default=14336)
    ap.add_argument("--windows", default="10,2,2", help="microseconds after QKV (rotary + attention), after O "
                    "(RMSNorm), after down (RMSNorm)")
    ap.add_argument("--launches", default="n2 k1024 p,n4 k512 p,cublas,n8 k512 p",
                    help="QKV, O, gate/up, down launches ('cublas' or a GEMV launch)")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--probe", action="store_true", help="instead: how fast O reads its weight after a prefetch, "
                    "after a full read of it, and cold")
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    h, q, inter = args.hidden, args.qkv, args.inter
    gen = torch.Generator(device=dev).manual_seed(0)

    def weight(n, k):  # outputs of the size of inputs, layer after layer
        return (torch.randn(n, k, generator=gen, device=dev) * k ** -0.5).to(torch.bfloat16)

    layers = [{"qkv": weight(q, h), "o": weight(h, h), "gu": weight(2 * inter, h), "down": weight(h, inter)}
              for _ in range(args.layers)]
    x0 = torch.randn(1, h, generator=gen, device=dev).to(torch.bfloat16)
    w_us = [float(v) for v in args.windows.split(",")]
    launches = []
    for i, t in enumerate(args.launches.split(",")):
        t = t.strip()
        if t == "cublas":
            launches.append((lambda x, w: F.linear(x, w)) if i != 3 else
                            (lambda x, w: F.linear(F.silu(x[:, :inter]) * x[:, inter:], w)))
        else:
            cfg = parse_launch(t)
            launches.append((lambda x, w, c=cfg: gemv(x, w, None, c)) if i != 3 else
                            (lambda x, w, c=cfg: silu_mul_gemv(x, w, c)))
    f_qkv, f_o, f_gu, f_down = launches
    scratch = {n: torch.empty(1, n, device=dev, dtype=torch.bfloat16) for n in (h, q)}
    wkw = launch_kwargs(dev)
    side = torch.cuda.Stream()

    def window(src, dep, n, us):
        if us > 0:
            _window_kernel[(16,)](src, dep, scratch[n], n, int(us * 1e3), BLOCK=triton.next_power_of_2(-(-n // 16)),
                                  **wkw)
            return scratch[n]
        return src

    def chain(plan, mode, method):
        x = x0
        main = torch.cuda.current_stream()
        forked = False

        def hint(point, li):
            nonlocal forked
            for name, mb in plan.get(point, ()):
                target = layers[(li + 1) % len(layers)]["qkv"] if name == "qkv" else layers[li][name]
                if mode == "side":
                    side.wait_stream(main)
                    with torch.cuda.stream(side):
                        prefetch(target, mb, method, False, args.chunk_kb << 10)
                    forked = True
                else:
                    prefetch(target, mb, method, True, args.chunk_kb << 10)

        for li, wts in enumerate(layers):
            a = f_qkv(x, wts["qkv"])
            hint("qkv", li)
            a = window(a[:, :h].contiguous() if a.shape[1] != h else a, a, h, w_us[0])
            a = f_o(a, wts["o"])
            hint("o", li)
            a = window(a, a, h, w_us[1])
            g = f_gu(a, wts["gu"])
            hint("gu", li)
            a = f_down(g, wts["down"])
            hint("down", li)
            x = window(a, a, h, w_us[2]) * 1  # a fresh tensor: the next layer's input
        if forked:
            main.wait_stream(side)
        return x

    if args.probe:
        return probe(args, dev, layers[0]["o"], f_o)
    ref = chain({}, "side", "bulk").clone()
    print(f"output: {ref.float().abs().max().item():.3g} largest magnitude, finite {bool(ref.isfinite().all())}")
    rows = []
    for plan_text in args.plans.split(","):
        plan = parse_plan(plan_text.strip())
        for mode in (["-"] if not plan else args.modes.split(",")):
            for method in (["-"] if not plan else args.methods.split(",")):
                out = chain(plan, mode, method)
                same = torch.equal(out, ref)
                us = time_graph(lambda: chain(plan, mode, method), args.reps) / len(layers)
                rows.append((plan_text, mode, method, us, same))
                print(f"{plan_text} {mode} {method}: {us:.2f} us per layer, same output {same}", flush=True)
    base = rows[0][3]
    print(f"\n{'plan':44s} {'mode':6s} {'method':6s} {'us/layer':>9} {'vs first':>8} same")
    for plan_text, mode, method, us, same in rows:
        print(f"{plan_text:44s} {mode:6s} {method:6s} {us:9.2f} {us / base:8.3f} {same}")


@triton.jit
def _sum_kernel(src, out, n, BLOCK: tl.constexpr):
    """Program i sums `src[i*BLOCK:(i+1)*BLOCK]` (through L2 only): a read that surely leaves the lines in L2."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(src + offs, mask=offs < n, other=0.0, cache_modifier=".cg").to(tl.float32)
    tl.store(out + tl.program_id(0), tl.sum(x, axis=0))


def probe(args: argparse.Namespace, dev: torch.device, w_o: torch.Tensor, f_o) -> None:
    """O's launch after a flush of L2 (a 256 MB read) and a 20 us idle window, with before the window nothing,
    a prefetch of its first MB (each method), or a full read of those MB; minus the same without O."""
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    sums = torch.empty(1 << 20, dtype=torch.float32, device=dev)
    x = torch.randn(1, w_o.shape[1], device=dev).to(torch.bfloat16)
    src = torch.randn(1, 4096, device=dev).to(torch.bfloat16)
    scratch = torch.empty_like(src)
    rows = []
    for mb in (8, 16, 24, 32):
        n = min(w_o.shape[0], int(mb * (1 << 20)) // (w_o.shape[1] * 2))
        w = w_o[:n]
        for how in ("cold", "bulk", "line", "read", "hot"):
            def run(with_o: bool, how=how, w=w):
                _sum_kernel[(flush.numel() // 16384,)](flush, sums, flush.numel(), BLOCK=16384)
                if how in ("bulk", "line"):
                    prefetch(w, 1 << 20, how, False, args.chunk_kb << 10)
                elif how == "read":
                    raw = w.reshape(-1)
                    _sum_kernel[(triton.cdiv(raw.numel(), 8192),)](raw, sums, raw.numel(), BLOCK=8192)
                elif how == "hot":
                    f_o(x, w)
                _window_kernel[(16,)](src, src, scratch, 4096, 20000, BLOCK=256, PDL=False)
                if with_o:
                    f_o(x, w)
            us = time_graph(lambda: run(True), args.reps) - time_graph(lambda: run(False), args.reps)
            rows.append((mb, how, us))
            print(f"{n}x{w.shape[1]} ({mb} MB) after {how}: {us:.2f} us", flush=True)
    print(f"\n{'MB':>4} " + " ".join(f"{h:>7}" for h in ("cold", "bulk", "line", "read", "hot")))
    for i in range(0, len(rows), 5):
        print(f"{rows[i][0]:4d} " + " ".join(f"{r[2]:7.2f}" for r in rows[i:i + 5]))


if __name__ == "__main__":
    main()
