"""Compile the decode-path kernels (decode attention, the small-batch GEMV and GEMM, the norms and rotary, a
captured pass's and a decode graph's inputs, a pass's expanded token inputs, the packed order's table, the
token pick; latent attention's decode and rope, the MoE's routing, expert and combine kernels) for Hopper
(sm_90) on any machine, no GPU needed: a change to them fails here, with the compiler's
message, before any GPU time is spent (the CPU interpreter checks meaning, not whether the kernel compiles).
Prints shared memory per variant (`--float32`: as a float32 model launches them); the test suite compiles the same
variants (tests/kernels/test_sm90_compile.py).

Shapes are Qwen3-0.6B's (bf16, 16 query / 8 KV heads, head_dim 128), DeepSeek-V2-Lite's for latent attention
and the MoE. Usage:
`PYTHONPATH=. python benchmarks/decode_sm90_check.py`.
"""
from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from tierlm.kernels.balanced_splits import _merge_kernel, _plan_kernel
from tierlm.kernels.decode_attention import _decode_stage1
from tierlm.kernels.decoupled_rope import _decoupled_rope_kernel
from tierlm.kernels.fused_moe import _down_kernel, _gate_up_kernel
from tierlm.kernels.longest_first import _longest_first_kernel
from tierlm.kernels.mla_decode import _mla_decode_stage1, _mla_merge
from tierlm.kernels.mla_extend import MLAExtendConfig, _mla_extend_kernel, launch_block_n
from tierlm.kernels.moe_combine import _combine_kernel
from tierlm.kernels.moe_pairs import _pair_down_kernel, _pair_gate_up_kernel
from tierlm.kernels.moe_route import _route_kernel
from tierlm.kernels.packed_tiles import _packed_tiles_kernel
from tierlm.kernels.fused import _qk_norm_rope_kernel, _rmsnorm_kernel, _silu_mul_kernel
from tierlm.kernels.gemv import _gemv_kernel
from tierlm.kernels.race_sample import _pick_kernel
from tierlm.kernels.request_splits import _request_merge_kernel
from tierlm.kernels.skinny_gemm import _skinny_kernel
from tierlm.kernels.step_metadata import _expand_kernel, _pad_inputs_kernel, _pad_mixed_kernel
from tierlm.kernels.store_kv import _store_kv_kernel

POINTERS = {"q_ptr": "*bf16", "k_buf": "*bf16", "v_buf": "*bf16", "req_to_token": "*i32", "req_rows": "*i32",
            "seq_lens": "*i32", "order": "*i32", "mid_o": "*fp32", "mid_lse": "*fp32", "k_new": "*bf16",
            "v_new": "*bf16", "out_loc": "*i64", "out_ptr": "*bf16", "x_ptr": "*bf16", "w_ptr": "*bf16",
            "b_ptr": "*bf16", "r_ptr": "*bf16", "nw_ptr": "*bf16", "r_out_ptr": "*bf16", "res_ptr": "*bf16",
            "res_out_ptr": "*bf16", "qkv_ptr": "*bf16", "pos_ptr": "*i64", "cos_ptr": "*fp32", "sin_ptr": "*fp32",
            "qw_ptr": "*bf16", "kw_ptr": "*bf16", "q_out": "*bf16", "k_out": "*bf16", "logits_ptr": "*bf16",
            "temp_ptr": "*fp32", "tok_ptr": "*i64", "val_ptr": "*fp32", "idx_ptr": "*i32", "part_ptr": "*fp32",
            "count_ptr": "*i32", "k_ptr": "*bf16", "v_ptr": "*bf16", "loc_ptr": "*i64", "latent_buf": "*bf16",
            "h_ptr": "*bf16", "ids_ptr": "*i64", "weights_ptr": "*fp32", "pairs_ptr": "*i32",
            "block_expert_ptr": "*i32", "total_ptr": "*i32", "rows_ptr": "*bf16", "add_ptr": "*bf16",
            "prefix_lens": "*i32", "qo_indptr": "*i32", "q_starts": "*i32", "plan_items": "*i32"}
FP8_POOL = {"k_buf": "*fp8e4nv", "v_buf": "*fp8e4nv"}  # --kv-cache-dtype fp8

MULTIPLES_OF_16 = {"K_SPLIT", "K"}  # integer arguments a multiple of 16 at launch on these shapes (Triton specializes)


def decode_variants() -> list[tuple[str, object, dict, dict]]:
    """(label, kernel, constexprs, pointer types other than `POINTERS`) of the variants the engine launches on
    Qwen3-0.6B's shape."""
    out = []
    for store, (use_dot, block_h), (pdl, splits) in itertools.product((True, False), ((True, 16), (False, 2)),
                                                                     ((False, 64), (True, 64), (True, 1))):
        out.append((f"stage 1 store_new={store} dot={use_dot} pdl={pdl} splits={splits}", _decode_stage1,
                    dict(BALANCED=False, GROUP=2, NUM_HEADS=16, HEAD_DIM=128,
                         MAX_SPLITS=splits, BLOCK_H=block_h, BLOCK_N=128,
                         BLOCK_D=128, HEAD_BLOCKS=1, USE_DOT=use_dot, DOT_PRECISION="tf32", STORE_NEW=store,
                         PDL=pdl, DIRECT=splits == 1, WIDE=tl.bfloat16, HEADS_FIRST=True, ORDERED=False,
                         PREFETCH_LINES=2 if pdl else 0, LINE=64, ROPE=False, NORM=False), {}))
    for norm, splits in ((True, 1), (True, 64), (False, 64)):  # q/k norm and rotary applied in stage 1
        out.append((f"stage 1 rope norm={norm} splits={splits}", _decode_stage1,
                    dict(BALANCED=False, GROUP=2, NUM_HEADS=16, HEAD_DIM=128,
                         MAX_SPLITS=splits, BLOCK_H=16, BLOCK_N=128, BLOCK_D=128,
                         HEAD_BLOCKS=1, USE_DOT=True, DOT_PRECISION="tf32", STORE_NEW=True, PDL=True,
                         DIRECT=splits == 1, WIDE=tl.bfloat16, HEADS_FIRST=True, ORDERED=False, PREFETCH_LINES=2,
                         LINE=64, ROPE=True, NORM=norm), {}))
    for heads_first, ordered in ((True, True), (False, True), (False, False)):
        out.append((f"stage 1 heads_first={heads_first} ordered={ordered}", _decode_stage1,
                    dict(BALANCED=False, GROUP=2, NUM_HEADS=16, HEAD_DIM=128,
                         MAX_SPLITS=64, BLOCK_H=16, BLOCK_N=128, BLOCK_D=128,
                         HEAD_BLOCKS=1, USE_DOT=True, DOT_PRECISION="tf32", STORE_NEW=True, PDL=True, DIRECT=False,
                         WIDE=tl.bfloat16, HEADS_FIRST=heads_first, ORDERED=ordered, PREFETCH_LINES=0, LINE=64,
                         ROPE=False, NORM=False),
                    {}))
    for use_dot, block_h in ((True, 16), (False, 2)):
        out.append((f"stage 1 fp8 pool dot={use_dot}", _decode_stage1,
                    dict(BALANCED=False, GROUP=2, NUM_HEADS=16, HEAD_DIM=128,
                         MAX_SPLITS=64, BLOCK_H=block_h, BLOCK_N=128,
                         BLOCK_D=128, HEAD_BLOCKS=1, USE_DOT=use_dot, DOT_PRECISION="tf32", STORE_NEW=True,
                         PDL=True, DIRECT=False, WIDE=tl.float16, HEADS_FIRST=True, ORDERED=True,
                         PREFETCH_LINES=1, LINE=128, ROPE=True, NORM=True), FP8_POOL))
    for store, pdl, rope in ((True, True, False), (False, False, False), (True, True, True)):
        # the KV split by tokens across the batch (`kernels.balanced_splits`): items from the step's plan
        out.append((f"stage 1 balanced store_new={store} pdl={pdl} rope={rope}", _decode_stage1,
                    dict(BALANCED=True, GROUP=2, NUM_HEADS=16, HEAD_DIM=128, MAX_SPLITS=1, BLOCK_H=16, BLOCK_N=64,
                         BLOCK_D=128, HEAD_BLOCKS=1, USE_DOT=True, DOT_PRECISION="tf32", STORE_NEW=store, PDL=pdl,
                         DIRECT=False, WIDE=tl.bfloat16, HEADS_FIRST=True, ORDERED=False,
                         PREFETCH_LINES=2 if pdl else 0, LINE=64, ROPE=rope, NORM=rope), {}))
    plan_ptrs = {"items": "*i32", "merges": "*i32"}
    out.append(("balanced plan (256 requests)", _plan_kernel, dict(BATCH_P2=256, ITEMS_P2=512, MERGES_P2=128),
                plan_ptrs))
    for pdl in (False, True):
        out.append((f"balanced merge pdl={pdl}", _merge_kernel, dict(NUM_HEADS=16, HEAD_DIM=128, BLOCK_S=16,
                                                                   BLOCK_D=128, PDL=pdl), plan_ptrs))
    for pool in ({}, FP8_POOL):
        out.append((f"store_kv pool={pool.get('k_buf', '*bf16')}", _store_kv_kernel,
                    dict(NUM_HEADS=8, HEAD_DIM=128, BLOCK_H=8, BLOCK_D=128), pool))
    out.append(("longest first order", _longest_first_kernel, dict(BLOCK=128), {}))
    for greedy, store, pen in itertools.product((True, False), (True, False), (False, True)):
        if pen and not store:  # the engine's penalized picks always store their tokens
            continue
        out.append((f"token pick greedy={greedy} store={store} penalize={pen}", _pick_kernel,
                    dict(QUARTER=512, BLOCK_P=128, FAST=True, GREEDY=greedy, STORE=store, PENALIZE=pen),
                    {"table_ptr": "*i32", "site_rows": "*i32", "site_pos": "*i32", "pen_table": "*i32",
                     "pen_slots": "*i32", "pen_factors": "*fp32"}))
    # a captured prefill or mixed pass: its inputs in one launch, the packed extend order's table
    wide, narrow = ("ids", "pos", "loc"), ("rows", "prefix", "seq", "qo")
    out.append(("captured pass inputs", _pad_mixed_kernel, dict(BLOCK=256),
                {f"{n}_{end}": t for n, t in [(w, "*i64") for w in wide] + [(w, "*i32") for w in narrow]
                 for end in ("src", "dst")}))
    out.append(("decode graph inputs", _pad_inputs_kernel, dict(BLOCK=256),
                {"rows_src": "*i32", "pos_src": "*i32", "lens_src": "*i32", "rows_dst": "*i32", "pos_dst": "*i64",
                 "lens_dst": "*i32", "ids_dst": "*i64", "loc_dst": "*i64", "prefix_dst": "*i32", "table_ptr": "*i32",
                 "token_ids_ptr": "*i32", "w_rows": "*i32", "w_pos": "*i32", "w_slots": "*i32"}))
    for decode in (False, True):
        out.append((f"token inputs expanded decode={decode}", _expand_kernel,
                    dict(FROM_TABLE=-1, DECODE=decode, BLOCK=256),
                    {"ids_src": "*i32", "rows_ptr": "*i32", "prefix_ptr": "*i32", "qo_ptr": "*i32", "table_ptr": "*i32",
                     "token_ids_ptr": "*i32", "ids_dst": "*i64", "pos_dst": "*i64", "loc_dst": "*i64"}))
    out.append(("packed order table", _packed_tiles_kernel, dict(BLOCK_M=64, BLOCK_B=64, BLOCK_R=16),
                {"qo_indptr": "*i32", "table": "*i32"}))
    for pdl in (False, True):
        out.append((f"stage 2 pdl={pdl}", _request_merge_kernel, dict(NUM_HEADS=16, HEAD_DIM=128, MAX_SPLITS=64,
                                                              BLOCK_S=64, BLOCK_N=128, BLOCK_D=128, PDL=pdl), {}))
        out.append((f"rmsnorm pdl={pdl}", _rmsnorm_kernel, dict(HAS_RES=True, BLOCK=1024, PDL=pdl), {}))
        out.append((f"silu_mul pdl={pdl}", _silu_mul_kernel, dict(BLOCK=1024, PDL=pdl), {}))
        for rows, norm in ((16, True), (64, True), (64, False)):
            out.append((f"qk_norm_rope rows={rows} norm={norm} pdl={pdl}", _qk_norm_rope_kernel,
                        dict(HEAD_DIM=128, HALF=64, NORM=norm, ROWS=rows, PDL=pdl), {}))
    for prologue, rows, pdl in itertools.product((0, 1, 2), (1, 4), (False, True)):
        out.append((f"gemv prologue={prologue} rows={rows} pdl={pdl}", _gemv_kernel,
                    dict(HAS_BIAS=False, PROLOGUE=prologue, HAS_RES=prologue == 1, BLOCK_M=rows, BLOCK_N=4,
                         BLOCK_K=1024, STAT_K=4096 if prologue == 1 and rows == 1 else 1024, PIPE=False, AHEAD=1,
                         PDL=pdl), {}))
    for prologue in (0, 1, 2):  # a whole row of up to 2,048 columns per tile (`gemv_tune.CANDIDATES`' last two)
        out.append((f"gemv n1 k2048 prologue={prologue}", _gemv_kernel,
                    dict(HAS_BIAS=False, PROLOGUE=prologue, HAS_RES=prologue == 1, BLOCK_M=1, BLOCK_N=1,
                         BLOCK_K=2048, STAT_K=2048, PIPE=False, AHEAD=1, PDL=True), {}))
    for prologue, rows, ahead in itertools.product((0, 1, 2), (1, 4), (1, 2)):
        if rows == 4 and ahead == 2:
            continue
        out.append((f"gemv pipelined prologue={prologue} rows={rows} ahead={ahead}", _gemv_kernel,
                    dict(HAS_BIAS=False, PROLOGUE=prologue, HAS_RES=prologue == 1, BLOCK_M=rows, BLOCK_N=4,
                         BLOCK_K=512, STAT_K=512, PIPE=True, AHEAD=ahead, PDL=True), {}))
    for rows, block_n, split, pdl, lines in ((16, 64, 1, True, 2), (256, 128, 1, True, 1), (64, 32, 4, True, 8),
                                             (32, 16, 2, False, 0), (64, 128, 2, True, 0)):
        out.append((f"skinny gemm rows={rows} n={block_n} split={split} pdl={pdl} prefetch={lines}", _skinny_kernel,
                    dict(HAS_BIAS=False, BLOCK_M=rows, BLOCK_N=block_n, BLOCK_K=128 if rows < 256 else 64,
                         SPLIT_K=split, PRECISION="tf32", PDL=pdl, PREFETCH_LINES=lines, LINE=64, TMA=False), {}))
    for rows, block_n, block_k, split in ((16, 64, 128, 1), (16, 128, 64, 4), (64, 64, 128, 2), (16, 32, 256, 2)):
        # the weight through a TMA descriptor (`SkinnyConfig.tma`), at batch 1-16 and 64
        out.append((f"skinny gemm tma rows={rows} n={block_n} k={block_k} split={split}", _skinny_kernel,
                    dict(HAS_BIAS=False, BLOCK_M=rows, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split,
                         PRECISION="tf32", PDL=True, PREFETCH_LINES=0, LINE=64, TMA=True),
                    {"w_ptr": f"tensordesc<bf16[{block_n}, {block_k}]>"}))
    out += latent_moe_variants()
    return out


def latent_moe_variants() -> list[tuple[str, object, dict, dict]]:
    """DeepSeek-V2-Lite's latent attention (16 heads, latent 512 + 64) and MoE (64 experts, top 6, 2048 x 1408)
    kernels, as the engine launches them at decode."""
    out = [("MLA stage 1", _mla_decode_stage1, dict(NUM_HEADS=16, LORA=512, ROPE=64, MAX_SPLITS=64, BLOCK_H=16,
                                                   BLOCK_N=32, BLOCK_C=512, BLOCK_R=64, DOT_PRECISION="tf32",
                                                   WIDE=tl.bfloat16), {}),
           ("MLA merge", _mla_merge, dict(NUM_HEADS=16, LORA=512, MAX_SPLITS=64, BLOCK_S=64, BLOCK_N=32,
                                          BLOCK_D=128), {}),
           # q_ends: one past qo_indptr's start, so never 16-byte aligned at launch
           ("MLA extend", _mla_extend_kernel, dict(NUM_HEADS=16, LORA=512, ROPE=64, BLOCK_T=4, BLOCK_H=16,
                                                  BLOCK_N=64, BLOCK_C=512, BLOCK_R=64, DOT_PRECISION="tf32",
                                                  WIDE=tl.bfloat16), {"q_ends": "*i32"})]
    out += [(f"decoupled rope pairing={p} in place={i}", _decoupled_rope_kernel,
             dict(HALF=32, BLOCK_HALF=32, BLOCK_H=32, PAIRING=p, IN_PLACE=i), {}) for p in (0, 1, 2)
            for i in (False, True)]
    plain = dict(SIGMOID=False, HAS_BIAS=False, GROUPS=1, TOPK_GROUP=1, TOP2=False, BLOCK_G=1)
    route = {"logits_ptr": "*fp32", "bias_ptr": "*fp32", "scale": "fp32"}
    out += [(f"softmax top-k renorm={r}", _route_kernel, dict(TOP_K=6, BLOCK_E=64, RENORM=r, **plain), route)
            for r in (False, True)]
    out += [("V2 grouped top-k (160 experts)", _route_kernel, dict(plain, TOP_K=6, BLOCK_E=256, RENORM=False,
                                                                    GROUPS=8, TOPK_GROUP=3, BLOCK_G=8), route),
            ("V3 sigmoid grouped top-k (256 experts)", _route_kernel,
             dict(TOP_K=8, BLOCK_E=256, RENORM=True, SIGMOID=True, HAS_BIAS=True, GROUPS=8, TOPK_GROUP=4, TOP2=True,
                  BLOCK_G=8), route)]
    for block_n, block_k in ((4, 1024), (8, 512), (16, 256)):
        out.append((f"MoE pairs gate/up n={block_n} k={block_k}", _pair_gate_up_kernel,
                    dict(TOP_K=6, BLOCK_N=block_n, BLOCK_K=block_k), {}))
        out.append((f"MoE pairs down n={block_n} k={block_k}", _pair_down_kernel,
                    dict(BLOCK_N=block_n, BLOCK_K=block_k), {}))
    grouped = dict(IEEE=False, BLOCK_M=16, BLOCK_N=128, BLOCK_K=128, GROUP_M=1)
    out.append(("MoE grouped gate/up", _gate_up_kernel, dict(TOP_K=6, **grouped), {}))
    out.append(("MoE grouped down", _down_kernel, grouped, {}))
    out += [(f"MoE combine add={a}", _combine_kernel, dict(TOP_K=6, BLOCK_N=1024, HAS_ADD=a), {})
            for a in (False, True)]
    return out


def compile_for_sm90(kernel, consts: dict, pointers: dict | None = None, num_warps: int = 4, num_stages: int = 2,
                     **options):
    """Compile `kernel` with `consts` as a launch with 16-byte aligned pointers and strides would (pointer
    types from `POINTERS`, overridden by `pointers`; `options`: more compiler options of the launch)."""
    names = kernel.arg_names
    types = {**POINTERS, **(pointers or {})}
    sig = {n: types.get(n, "i32") for n in names}
    sig.update({n: "fp32" for n in names if n.startswith("sm_scale") or n == "eps"})
    sig.update({n: "i64" for n in names if n == "seed"})
    sig.update({n: "constexpr" for n in consts})
    aligned = [i for i, n in enumerate(names) if (n in POINTERS and sig[n].startswith("*")) or n.startswith("stride")
               or n in MULTIPLES_OF_16]
    src = ASTSource(kernel, sig, consts, {(i,): [["tt.divisibility", 16]] for i in aligned})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps,
                                                                           num_stages=num_stages, **options))


HOPPER_SHARED = 232448  # bytes of shared memory one program may take on an H100 / H200


def as_float32(variant: tuple[str, object, dict, dict]) -> tuple[str, object, dict, dict]:
    """A variant as a float32 model launches it: bf16 tensors float32, tensor-core dots in IEEE precision."""
    label, kernel, consts, pointers = variant
    consts = {k: ("ieee" if v == "tf32" else tl.float32 if v is tl.bfloat16 else True if k == "IEEE" else v)
              for k, v in consts.items()}
    if kernel is _mla_extend_kernel:  # its float32 launch takes narrower latent tiles
        consts["BLOCK_N"] = launch_block_n(MLAExtendConfig(block_n=consts["BLOCK_N"]), torch.float32)
    pointers = {**{k: "*fp32" for k, v in POINTERS.items() if v == "*bf16"},
                **{k: v.replace("bf16", "fp32") for k, v in pointers.items()}}
    return label, kernel, consts, pointers


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--float32", action="store_true", help="The variants as a float32 model launches them "
                    "(shared memory doubles where tiles are staged; OVER marks what no Hopper SM holds).")
    ap.add_argument("--stages", type=int, default=2, help="Software pipeline depth of every launch.")
    args = ap.parse_args()
    print(f"triton {triton.__version__}")
    for variant in decode_variants():
        label, kernel, consts, pointers = as_float32(variant) if args.float32 else variant
        shared = compile_for_sm90(kernel, consts, pointers, num_stages=args.stages).metadata.shared
        print(f"{label:40s} shared {shared:6d} B{'  OVER' if shared > HOPPER_SHARED else ''}")


if __name__ == "__main__":
    main()
