"""Compile extend attention launch variants for Hopper (sm_90a) on any machine, no GPU needed, and report
what decides their speed before any GPU time is spent: registers and shared memory per program (so how many
programs fit on an SM), spills, and whether ptxas serialized the kernel's wgmma pipeline (its C7515 note:
every tensor-core op then waits for the previous one, a several-fold slowdown that no timing explains).

Shapes are bench_extend's (bf16, 16 query / 8 KV heads, head_dim 128, one request). Uses Triton's bundled
ptxas. Usage: `PYTHONPATH=. python benchmarks/extend_sm90_check.py [--sweep] [--variants JSON]`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource

from benchmarks.bench_extend import SWEEP
from tierlm.kernels.extend_attention import _extend_kernel, kernel_constants

HEADS, KV_HEADS, HEAD_DIM = 16, 8, 128
SM_REGS, SM_SMEM, SMEM_PER_PROGRAM_RESERVED = 65536, 233472, 1024  # H100/H200 per SM
POINTERS = ("q_ptr", "k_ptr", "v_ptr", "out_ptr", "k_buf", "v_buf")
INDEX_POINTERS = ("req_to_token", "req_rows", "prefix_lens", "qo_indptr", "tile_table")


def compile_variant(var: dict) -> dict:
    """Compile one variant (the keyword set of extend_attention) as a one-request bf16 launch would."""
    knobs = dict(block_m=64, block_n=64, num_warps=4, num_stages=3, causal_split=True, order="heavy_first",
                 pack_heads=1, prescale_q=False, tma=True, prefix_stages=0, maxnreg=0) | var
    pool = knobs.pop("pool", "bf16")  # the KV pool's element type ("fp8e4nv": --kv-cache-dtype fp8)
    round_new = not knobs.pop("new_rounded", False)
    widen = knobs.pop("widen_prefix", pool == "fp8e4nv")  # as extend_attention decides for a bf16 query
    consts = kernel_constants(HEADS // KV_HEADS, HEAD_DIM, False, round_new=round_new, widen_prefix=widen,
                              **{k: v for k, v in knobs.items() if k not in ("num_warps", "maxnreg")})
    consts["batch"] = 1  # Triton specializes an int argument equal to 1
    sig = {name: "i32" for name in _extend_kernel.arg_names}
    sig.update({name: "*bf16" for name in POINTERS} | {name: "*i32" for name in INDEX_POINTERS})
    sig.update(k_buf=f"*{pool}", v_buf=f"*{pool}")
    desc = f"tensordesc<bf16[{knobs['block_n']}, {HEAD_DIM}]>" if consts["USE_TMA"] else "*bf16"
    sig.update(k_desc=desc, v_desc=desc, qk_scale="fp32", **{name: "constexpr" for name in consts})
    aligned = [i for i, name in enumerate(_extend_kernel.arg_names)  # pointers and strides: multiples of 16
               if name.startswith("stride") or name in POINTERS + INDEX_POINTERS]
    src = ASTSource(_extend_kernel, sig, consts, {(i,): [["tt.divisibility", 16]] for i in aligned})
    options = dict(num_warps=knobs["num_warps"], num_stages=knobs["num_stages"], maxnreg=knobs["maxnreg"] or None)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "k.ptx"
        ptx.write_text(kernel.asm["ptx"])
        log = subprocess.run([get_ptxas(90).path, "-v", "--regAllocOptLevel=2", "--gpu-name=sm_90a", str(ptx),
                              "-o", str(Path(tmp) / "k.o")], capture_output=True, text=True).stderr
    regs = int(log.split("Used ")[1].split(" registers")[0])
    spilled = "0 bytes spill stores" not in log
    threads = 32 * knobs["num_warps"]
    per_sm = min(SM_REGS // (-(-regs // 8) * 8 * threads), SM_SMEM // (kernel.metadata.shared +
                                                                         SMEM_PER_PROGRAM_RESERVED))
    return {"regs": regs, "smem": kernel.metadata.shared, "spills": spilled, "serialized": "C7515" in log,
            "per_sm": per_sm, "warps_per_sm": per_sm * knobs["num_warps"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=None,
                    help="JSON list of keyword sets for extend_attention ('pool': 'fp8e4nv' for an fp8 KV pool)")
    ap.add_argument("--sweep", action="store_true", help="check bench_extend's SWEEP list (after any --variants)")
    args = ap.parse_args()
    variants = json.loads(args.variants) if args.variants else ([] if args.sweep else [{}])
    variants += [dict(v) for v in SWEEP] if args.sweep else []
    print(f"triton {triton.__version__}, sm_90a: registers per thread, shared bytes, programs and warps per SM")
    print(f"{'regs':>4} {'smem':>7} {'/SM':>3} {'warps':>5}  spills  wgmma      variant")
    for var in variants:
        try:
            r = compile_variant(var)
        except Exception as exc:  # noqa: BLE001 - a variant that does not compile is reported, not fatal
            print(f"{json.dumps(var)}: failed: {type(exc).__name__}: {str(exc).splitlines()[0][:150]}")
            continue
        print(f"{r['regs']:>4} {r['smem']:>7} {r['per_sm']:>3} {r['warps_per_sm']:>5}  "
              f"{'SPILLS' if r['spills'] else 'none':6}  {'SERIALIZED' if r['serialized'] else 'async':10} "
              f"{json.dumps(var)}")


if __name__ == "__main__":
    main()
