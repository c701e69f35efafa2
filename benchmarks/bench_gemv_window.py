"""GPU benchmark: how much of a small-batch linear's weight read hides in the idle memory time before it.

At batch 1 the kernels between a decode layer's QKV and O projections (rotary, decode attention) read almost
nothing, so HBM idles for several microseconds per layer. A GEMV launched with PDL (`tierlm.kernels.pdl`)
starts while its predecessor runs and loads its first weight tile before it waits; a launch whose K tile is
the whole row (`block_k >= K`) loads all of its weight before the wait. This script stands a kernel that
holds a few programs busy for `--windows` microseconds (reading and writing a few bytes, PDL-aware like the
engine's kernels) in for that predecessor, chains it with one linear per layer over enough distinct weights
that they come from HBM, and times the chain in one CUDA graph for cuBLAS and each GEMV launch.

Prints, per weight shape and window, microseconds per layer of the chain, of the linear alone (window 0) and
what the overlap saved (window alone + linear alone - chain). Outputs are checked against cuBLAS first.
Usage: `PYTHONPATH=. python benchmarks/bench_gemv_window.py [--shapes 4096x4096,...] [--windows 0,4,8]`.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait, globaltimer

from benchmarks.timing import captured, median_seconds
from tierlm.kernels.gemv import GemvConfig, gemv
from tierlm.kernels.pdl import ENV, launch_kwargs

SHAPES = "4096x4096,6144x4096,4096x14336,1024x2048,4096x1024"
LAUNCHES = ("n4 k512 p,n2 k1024 p,n4 k512 p2,n1 k4096 w4,n2 k4096 w4,n2 k4096 w8,n4 k4096 w8,n1 k2048 w4,"
            "n2 k2048 w4,n1 k16384 w8,n1 k16384 w16")


@triton.jit
def _window_kernel(src_ptr, dep_ptr, dst_ptr, n, ns, BLOCK: tl.constexpr, PDL: tl.constexpr,
                   WAIT: tl.constexpr = True, LATE: tl.constexpr = False):
    """Each program waits `ns` nanoseconds, then copies its block of `src` (plus 0 x `dep[0]`, so that the
    chain's data dependency runs through it) into `dst`: a predecessor that keeps HBM idle. It lets its
    successor start first thing, or with `LATE` only once its own wait is over. `WAIT` False (diagnosis only:
    the chain's results are then racy) skips the PDL wait for the linear before it."""
    if PDL:
        if not LATE:
            gdc_launch_dependents()
        if WAIT:
            gdc_wait()
        if LATE:
            gdc_launch_dependents()
    start = globaltimer()
    while globaltimer() - start < ns:
        pass
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    dep = tl.load(dep_ptr).to(tl.float32)
    x = tl.load(src_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    tl.store(dst_ptr + offs, (x + 0.0 * dep).to(dst_ptr.dtype.element_ty), mask=offs < n)


def parse_launch(text: str) -> GemvConfig:
    parts = text.split()
    n, k = int(parts[0][1:]), int(parts[1][1:])
    warps = next((int(p[1:]) for p in parts[2:] if p.startswith("w")), 4)
    pipelined = any(p.startswith("p") for p in parts[2:])
    ahead = 2 if "p2" in parts[2:] else 1
    return GemvConfig(n, k, warps, pipelined, ahead)


def time_eager(fn, reps: int = 15) -> float:
    """Median microseconds per call of `fn()` launched from the host (no graph)."""
    return median_seconds(fn, reps) * 1e6


def time_graph(fn, reps: int = 15) -> float:
    """Median microseconds per replay of `fn()` captured in a CUDA graph."""
    return median_seconds(captured(fn)[0].replay, reps) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=SHAPES, help="comma list of NxK weight shapes")
    ap.add_argument("--windows", default="0,4,8", help="comma list of the predecessor's busy microseconds")
    ap.add_argument("--launches", default=LAUNCHES, help="comma list of 'nN kK [wW] [p|p2]' GEMV launches")
    ap.add_argument("--programs", type=int, default=16, help="programs of the predecessor")
    ap.add_argument("--pdl", default="1", help="comma list of PDL modes to time (1 on, 0 off)")
    ap.add_argument("--window-launch", default="pdl", choices=("pdl", "late", "plain"),
                    help="the predecessor: PDL-launched, letting the linear start first thing (pdl) or after its "
                    "own wait (late); or launched in full stream order, letting the linear start first thing "
                    "(plain)")
    ap.add_argument("--eager", action="store_true", help="launch from the host instead of a CUDA graph")
    ap.add_argument("--no-wait", action="store_true", help="diagnosis: the predecessor does not wait for the "
                    "linear before it (results racy; shows whether PDL lets kernels overlap at all)")
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}")
    for mode in args.pdl.split(","):
        os.environ[ENV] = mode  # read at each launch, so at capture
        print(f"PDL {launch_kwargs(dev)['PDL']}, predecessor launched '{args.window_launch}'"
              + (", without its wait" if args.no_wait else ""))
        run(args, dev)


def run(args: argparse.Namespace, dev: torch.device) -> None:
    """The table of one PDL mode."""
    timed = time_eager if args.eager else time_graph
    window_kwargs = launch_kwargs(dev)
    if args.window_launch == "plain":  # the PDL instructions, without the launch attribute that lets it start early
        window_kwargs = {"PDL": window_kwargs["PDL"]}
    windows = [float(w) for w in args.windows.split(",")]
    table = []
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        layers = max(4, -(-(400 << 20) // (n * k * 2)))  # distinct weights: over L2 several times
        gen = torch.Generator(device=dev).manual_seed(0)
        ws = [(torch.randn(n, k, generator=gen, device=dev) * 0.02).to(torch.bfloat16) for _ in range(layers)]
        src = torch.randn(1, k, generator=gen, device=dev).to(torch.bfloat16)
        xs = [torch.empty(1, k, device=dev, dtype=torch.bfloat16) for _ in range(layers)]
        block = triton.next_power_of_2(-(-k // args.programs))

        def chain(linear, ns, run_window=True, run_linear=True):
            out = src.new_zeros(1, n)
            for i in range(layers):
                if run_window:
                    _window_kernel[(args.programs,)](src, out, xs[i], k, int(ns), BLOCK=block,
                                                     WAIT=not args.no_wait, LATE=args.window_launch == "late",
                                                     **window_kwargs)
                if run_linear:
                    out = linear(xs[i], ws[i])
            return out

        cublas = lambda x, w: F.linear(x, w)  # noqa: E731
        launches = [("cublas", cublas)]
        for text in args.launches.split(","):
            cfg = parse_launch(text.strip())
            if cfg.block_k > 2 * triton.next_power_of_2(k):
                continue
            lin = lambda x, w, cfg=cfg: gemv(x, w, None, cfg)  # noqa: E731
            xs[0].copy_(src)
            ref = F.linear(xs[0].float(), ws[0].float())
            err = (lin(xs[0], ws[0]).float() - ref).abs().max().item()
            if not err <= 0.02 * ref.abs().max().item():
                print(f"{shape} {text}: differs from float32 by {err:.3g}; skipped")
                continue
            launches.append((text.strip(), lin))
        alone = {label: timed(lambda f=f: chain(f, 0, run_window=False)) / layers for label, f in launches}
        for w_us in windows:
            win = timed(lambda: chain(cublas, w_us * 1e3, run_linear=False)) / layers
            for label, f in launches:
                both = timed(lambda f=f: chain(f, w_us * 1e3)) / layers
                table.append((shape, w_us, label, win, alone[label], both))
                print(f"{shape} window {w_us} {label}: window {win:.2f} linear {alone[label]:.2f} chain {both:.2f}",
                      flush=True)
        torch.cuda.synchronize()
        ws.clear()  # the weights go before the next shape's
    print(f"\n{'shape':>11} {'window':>6} {'launch':14s} {'window us':>9} {'linear us':>9} {'chain us':>9} "
          f"{'hidden us':>9} {'GB/s alone':>10}")
    for shape, w_us, label, win, lin, both in table:
        n, k = (int(v) for v in shape.split("x"))
        print(f"{shape:>11} {w_us:6.1f} {label:14s} {win:9.2f} {lin:9.2f} {both:9.2f} {win + lin - both:9.2f} "
              f"{n * k * 2 / lin / 1e3:10.0f}")


if __name__ == "__main__":
    main()
