"""Kernel test cases, runnable in-process (GPU) or in a subprocess under Triton's interpreter (CPU).

Each case is `fn(device, dtype)` and raises on a mismatch. `python -m tests.kernels.cases NAME...` runs the
named cases and prints one JSON line `{name: "ok" | traceback}`; it must be started with
TRITON_INTERPRET=1 in its environment when no GPU is present (see tests/kernels/interp.py).
"""
from __future__ import annotations

import json
import sys
import traceback
from typing import Callable

import torch

from tests.kernels.reference import make_scenario, reference_attention, tolerance

CaseFn = Callable[[str, torch.dtype], None]


def _poison(shape, device: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to the bit (NaNs included), for any dtype (fp8 included)."""
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def check_store(device: str, dtype: torch.dtype, page_size: int = 4, kv_dtype: torch.dtype | None = None,
                round_back: bool = False) -> None:
    """With `kv_dtype` (a narrower pool) the kernel must store torch's cast, saturation included (values past
    fp8's range). With `round_back` the new K/V must hold the pool's values afterwards."""
    from tierlm.kernels.store_kv import store_kv
    from tierlm.kvcache.pool import put_rows, take_rows

    sc = make_scenario([3, 0, 11], [5, 7, 1], 4, 2, 32, page_size, dtype, device, seed=1, kv_dtype=kv_dtype)
    if kv_dtype is not None:
        sc.k.mul_(300)
    k_ref, v_ref = sc.k_buf.clone(), sc.v_buf.clone()
    put_rows(k_ref, sc.out_loc, sc.k)  # torch's cast
    put_rows(v_ref, sc.out_loc, sc.v)
    k_new, v_new = sc.k.clone(), sc.v.clone()
    rounded = store_kv(sc.k, sc.v, sc.k_buf, sc.v_buf, sc.out_loc, round_back=round_back)
    assert same_bytes(sc.k_buf, k_ref) and same_bytes(sc.v_buf, v_ref)  # and no other slot touched
    assert rounded == (round_back or sc.k_buf.dtype == dtype)
    if rounded:
        assert same_bytes(sc.k, take_rows(k_ref, sc.out_loc).to(dtype))
        assert same_bytes(sc.v, take_rows(v_ref, sc.out_loc).to(dtype))
    else:
        assert same_bytes(sc.k, k_new) and same_bytes(sc.v, v_new)


def check_decode(device: str, dtype: torch.dtype, *, num_heads: int, num_kv_heads: int, head_dim: int = 32,
                 seqs: tuple[int, ...] = (1, 7, 37, 20, 64), page_size: int = 1, max_splits: int = 4,
                 min_chunk: int = 8, block_n: int = 16, dot_min_group: int = 4, seed: int = 0,
                 fused_store: bool = False, kv_dtype: torch.dtype | None = None, heads_first: bool = True,
                 longest_first: bool = False, balanced: tuple[int, int] = (0, 0)) -> None:
    """Decode attention against the reference; with `fused_store` the step's K/V reach the kernel as
    `new_kv` while their pool slots hold NaN, and must be in the pool afterwards. `heads_first`: the order
    stage 1's programs are numbered in; `longest_first`: stage 1 takes the requests longest first (neither
    may change the result); `balanced = (goal, extra)`: the KV split by tokens across the batch by a plan of
    `goal + extra` items (the scratch sized for them, `max_splits` ignored)."""
    from tierlm.kernels.balanced_splits import balanced_plan, scratch_splits
    from tierlm.kernels.decode_attention import decode_attention
    from tierlm.kernels.longest_first import longest_first as by_length
    from tierlm.kvcache.pool import put_rows

    sc = make_scenario([s - 1 for s in seqs], [1] * len(seqs), num_heads, num_kv_heads, head_dim, page_size,
                       dtype, device, seed=seed, kv_dtype=kv_dtype)
    put_rows(sc.k_buf, sc.out_loc, sc.k)  # decode attends to the pool after the store
    put_rows(sc.v_buf, sc.out_loc, sc.v)
    ref = reference_attention(sc, scale := head_dim ** -0.5, new_kv_in_pool=True)
    k_after, v_after = sc.k_buf.clone(), sc.v_buf.clone()
    new_kv = None
    if fused_store:
        put_rows(sc.k_buf, sc.out_loc, torch.full_like(sc.k, float("nan")))
        put_rows(sc.v_buf, sc.out_loc, torch.full_like(sc.v, float("nan")))
        new_kv = (sc.k, sc.v, sc.out_loc)
    batch = len(seqs)
    plan = balanced_plan(sc.seq_lens, *balanced, min_chunk, block_n) if balanced[0] else None
    max_splits = scratch_splits(batch, plan.items.shape[0]) if plan is not None else max_splits
    out = _poison((batch, num_heads, head_dim), device, dtype)
    mid_o = _poison((batch, num_heads, max_splits, head_dim), device)
    mid_lse = _poison((batch, num_heads, max_splits), device)
    decode_attention(sc.q, sc.k_buf, sc.v_buf, sc.req_to_token, sc.rows, sc.seq_lens, out, mid_o, mid_lse, scale,
                     min_chunk=min_chunk, block_n=block_n, dot_min_group=dot_min_group, num_warps=4, num_stages=1,
                     heads_first=heads_first, order=by_length(sc.seq_lens) if longest_first else None, new_kv=new_kv,
                     balanced=plan)
    torch.testing.assert_close(out.cpu().double(), ref, **tolerance(dtype))
    assert same_bytes(sc.k_buf, k_after) and same_bytes(sc.v_buf, v_after)  # stored, nothing else touched


def check_longest_first(device: str, dtype: torch.dtype) -> None:
    """The longest-first order against torch's stable sort: ties in batch order, batches past one block."""
    from tierlm.kernels.longest_first import longest_first

    gen = torch.Generator().manual_seed(7)
    for n in (1, 5, 128, 200, 300):
        lens = torch.randint(1, 40, (n,), generator=gen, dtype=torch.int32)  # many ties
        got = longest_first(lens.to(device)).cpu()
        assert got.dtype == torch.int32
        assert got.tolist() == torch.argsort(lens, descending=True, stable=True).tolist(), n


def check_balanced_plan(device: str, dtype: torch.dtype) -> None:
    """The plan's items cover every request's tokens in order, in at most the items it has, each slice at most
    one chunk, and its merges list exactly the requests with several slices (against a plain Python plan)."""
    from tierlm.kernels.balanced_splits import DOUBLINGS, balanced_plan, plan_sizes

    gen = torch.Generator().manual_seed(19)
    shapes = [([500] * 8 + [9000], 9, 4, 128, 64), ([3, 0, 1], 3, 1, 16, 16), ([65] * 4 + [200], 5, 1, 16, 16),
              (torch.randint(1, 3000, (300,), generator=gen).tolist(), 300, 66, 128, 64), ([7] * 40, 2, 0, 4, 4)]
    for lens, goal, extra, min_chunk, granule in shapes:
        n_items, n_merges = plan_sizes(len(lens), goal, extra)
        chunk = -(-max(-(-sum(lens) // goal), min_chunk) // granule) * granule
        for _ in range(DOUBLINGS.value):
            chunk = chunk if sum(max(1, -(-n // chunk)) for n in lens) <= n_items else 2 * chunk
        if sum(max(1, -(-n // chunk)) for n in lens) > n_items:
            chunk = max(max(lens), 1)
        want = [(b, s * chunk, min(n, (s + 1) * chunk), max(1, -(-n // chunk)))
                for b, n in enumerate(lens) for s in range(max(1, -(-n // chunk)))]
        plan = balanced_plan(torch.tensor(lens, dtype=torch.int32, device=device), goal, extra, min_chunk, granule)
        items = plan.items.cpu().tolist()
        assert len(want) <= n_items and [tuple(r) for r in items[:len(want)]] == want, (lens[:5], chunk)
        assert all(r[3] == 0 for r in items[len(want):])
        firsts = {}
        for i, (b, _, _, count) in enumerate(want):
            firsts.setdefault(b, (i, count))
        many = [(b, i, c) for b, (i, c) in firsts.items() if c > 1]
        merges = [tuple(r) for r in plan.merges.cpu().tolist()]
        assert merges[:len(many)] == many and all(r[2] == 0 for r in merges[len(many):]), (lens[:5], chunk)


def check_extend(device: str, dtype: torch.dtype, *, num_heads: int, num_kv_heads: int, prefix: tuple[int, ...],
                 extend: tuple[int, ...], head_dim: int = 32, page_size: int = 1, block_m: int = 16,
                 block_n: int = 16, seed: int = 0, kv_dtype: torch.dtype | None = None,
                 rounded_by_store: bool = False, **knobs) -> None:
    """`rounded_by_store`: the new K/V pass through `store_kv(round_back=True)` first, as the backend does, and
    the kernel attends them unrounded; otherwise it rounds them to the pool's dtype itself."""
    from tierlm.kernels.extend_attention import extend_attention
    from tierlm.kernels.store_kv import store_kv

    sc = make_scenario(list(prefix), list(extend), num_heads, num_kv_heads, head_dim, page_size, dtype, device,
                       seed=seed, kv_dtype=kv_dtype)
    scale = head_dim ** -0.5
    out = _poison(sc.q.shape, device, dtype)
    if rounded_by_store:
        knobs["new_rounded"] = store_kv(sc.k, sc.v, sc.k_buf, sc.v_buf, sc.out_loc, round_back=True)
    extend_attention(sc.q, sc.k, sc.v, out, sc.k_buf, sc.v_buf, sc.req_to_token, sc.rows, sc.prefix_lens,
                     sc.qo_indptr, max(extend), scale, block_m=block_m, block_n=block_n, num_warps=4, num_stages=1,
                     **knobs)
    ref = reference_attention(sc, scale, new_kv_in_pool=False)  # new K/V come from k/v, not the pool
    torch.testing.assert_close(out.cpu().double(), ref, **tolerance(dtype))


def _cases() -> dict[str, CaseFn]:
    def dec(**kw) -> CaseFn:
        return lambda device, dtype: check_decode(device, dtype, **kw)

    def ext(**kw) -> CaseFn:
        return lambda device, dtype: check_extend(device, dtype, **kw)

    mixed = dict(prefix=(0, 9, 3, 20), extend=(5, 17, 1, 12))
    return {
        "store_page1": lambda d, t: check_store(d, t, page_size=1),
        "store_page4": lambda d, t: check_store(d, t, page_size=4),
        "decode_gqa1": dec(num_heads=4, num_kv_heads=4),
        "decode_gqa2_bcast": dec(num_heads=4, num_kv_heads=2, page_size=4),
        "decode_gqa2_dot": dec(num_heads=4, num_kv_heads=2, dot_min_group=1, seed=3),
        "decode_gqa4_page4": dec(num_heads=8, num_kv_heads=2, page_size=4, seed=1),
        "decode_gqa4_batch_first": dec(num_heads=8, num_kv_heads=2, page_size=4, seed=1, heads_first=False),
        "decode_fused_store_batch_first": dec(num_heads=8, num_kv_heads=2, max_splits=1, fused_store=True, seed=10,
                                              heads_first=False),
        "decode_gqa8": dec(num_heads=8, num_kv_heads=1, seed=2),
        "longest_first_order": check_longest_first,
        "decode_longest_first": dec(num_heads=8, num_kv_heads=2, page_size=4, seed=11, longest_first=True),
        "decode_longest_first_fused_store": dec(num_heads=4, num_kv_heads=2, max_splits=1, fused_store=True,
                                                seed=12, longest_first=True),
        "decode_one_split": dec(num_heads=4, num_kv_heads=1, max_splits=1, seed=4),
        "decode_many_splits_d48": dec(num_heads=4, num_kv_heads=1, head_dim=48, max_splits=16, min_chunk=4,
                                      seqs=(3, 50, 17), seed=5),
        "decode_fused_store_bcast": dec(num_heads=4, num_kv_heads=2, page_size=4, fused_store=True, seed=6),
        "decode_fused_store_dot": dec(num_heads=8, num_kv_heads=2, dot_min_group=1, fused_store=True, seed=7),
        "decode_fused_store_splits_d48": dec(num_heads=4, num_kv_heads=1, head_dim=48, max_splits=16, min_chunk=4,
                                             seqs=(1, 3, 50, 17, 16, 33), fused_store=True, seed=8),
        # the KV split by tokens: a long request among short ones takes several slices, the short ones one each
        "decode_balanced_skewed": dec(num_heads=8, num_kv_heads=2, seqs=(1, 7, 200, 5, 64, 3), balanced=(6, 4),
                                      seed=13),
        "decode_balanced_fused_store_dot": dec(num_heads=8, num_kv_heads=2, dot_min_group=1, fused_store=True,
                                               seqs=(150, 2, 9, 300), balanced=(4, 8), seed=14),
        "decode_balanced_batch_first": dec(num_heads=4, num_kv_heads=2, page_size=4, seqs=(33, 1, 97, 12, 2),
                                           balanced=(5, 5), fused_store=True, heads_first=False, seed=15),
        "decode_balanced_all_alone": dec(num_heads=4, num_kv_heads=1, seqs=(9, 30, 2, 17), balanced=(1, 1), seed=16),
        "balanced_plan": check_balanced_plan,
        # more slices than one merge step takes (16), and a plan that must double its chunk to fit
        "decode_balanced_one_request": dec(num_heads=4, num_kv_heads=1, head_dim=48, seqs=(400,), balanced=(40, 0),
                                           min_chunk=4, fused_store=True, seed=17),
        "decode_balanced_doubling": dec(num_heads=4, num_kv_heads=1, seqs=(65, 65, 65, 65, 200), balanced=(5, 1),
                                        seed=18),
        "decode_fused_store_one_split": dec(num_heads=4, num_kv_heads=1, max_splits=1, fused_store=True, seed=9),
        "extend_noprefix_gqa1": ext(num_heads=2, num_kv_heads=2, prefix=(0, 0, 0), extend=(5, 17, 33)),
        "extend_prefix_gqa1_page4": ext(num_heads=2, num_kv_heads=2, page_size=4, **mixed),
        "extend_prefix_gqa4": ext(num_heads=4, num_kv_heads=1, **mixed, seed=1),
        "extend_prefix_gqa8_page4": ext(num_heads=8, num_kv_heads=1, page_size=4, prefix=(13, 4),
                                        extend=(3, 19), seed=2),
        # a pool narrower than the model (fp16 under fp32 here, as the interpreter rounds to bf16 unlike the
        # device; fp8 among the GPU cases): the store rounds the new K/V back and the kernel attends them as given
        "store_round_back_fp16_pool": lambda d, t: check_store(d, t, kv_dtype=torch.float16, round_back=True),
        "extend_rounded_by_store_fp16_pool": ext(num_heads=4, num_kv_heads=1, **mixed, seed=3,
                                                 kv_dtype=torch.float16, rounded_by_store=True),
    }


CASES: dict[str, CaseFn] = _cases()


def _fp8_cases() -> dict[str, CaseFn]:
    """The same kernels over an fp8 (e4m3) pool, `--kv-cache-dtype fp8`. GPU only: Triton's interpreter does
    not round to fp8 as the device (and torch) do."""
    fp8 = dict(kv_dtype=torch.float8_e4m3fn)
    mixed = dict(prefix=(0, 9, 3, 20), extend=(5, 17, 1, 12))
    return {
        "fp8_store_page4": lambda d, t: check_store(d, t, page_size=4, **fp8),
        "fp8_decode_gqa2_dot": lambda d, t: check_decode(d, t, num_heads=4, num_kv_heads=2, dot_min_group=1, seed=3,
                                                         **fp8),
        "fp8_decode_fused_store_bcast": lambda d, t: check_decode(d, t, num_heads=4, num_kv_heads=2, page_size=4,
                                                                  fused_store=True, seed=6, **fp8),
        "fp8_decode_fused_store_splits_d48": lambda d, t: check_decode(
            d, t, num_heads=4, num_kv_heads=1, head_dim=48, max_splits=16, min_chunk=4, seqs=(1, 3, 50, 17, 16, 33),
            fused_store=True, seed=8, **fp8),
        "fp8_extend_prefix_gqa4": lambda d, t: check_extend(d, t, num_heads=4, num_kv_heads=1, **mixed, seed=1, **fp8),
        "fp8_extend_prefix_gqa1_page4": lambda d, t: check_extend(d, t, num_heads=2, num_kv_heads=2, page_size=4,
                                                                  **mixed, **fp8),
        "fp8_store_round_back": lambda d, t: check_store(d, t, page_size=4, round_back=True, **fp8),
        "fp8_extend_rounded_by_store": lambda d, t: check_extend(d, t, num_heads=4, num_kv_heads=1, **mixed, seed=4,
                                                                 rounded_by_store=True, **fp8),
    }


FP8_CASES: dict[str, CaseFn] = _fp8_cases()


def run(names: list[str], device: str, dtypes: list[torch.dtype],
        cases: dict[str, CaseFn] | None = None) -> dict[str, str]:
    """Run cases by name for each dtype; map `name[dtype]` to "ok" or the failure's traceback."""
    cases = {**CASES, **FP8_CASES} if cases is None else cases
    results = {}
    for name in names:
        for dtype in dtypes:
            key = f"{name}[{str(dtype).removeprefix('torch.')}]"
            try:
                cases[name](device, dtype)
                results[key] = "ok"
            except Exception:  # noqa: BLE001 - reported to the parent test verbatim
                results[key] = traceback.format_exc()
    return results


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:] or list(CASES), "cpu", [torch.float32])))
