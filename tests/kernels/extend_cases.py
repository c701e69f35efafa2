"""Extend attention under each tuning knob of `extend_attention` vs the float64 reference.

Every case runs one ragged batch that covers the edges the knobs touch: no prefix, prefixes that are and are
not a multiple of the key tile, an extend of one token, extends shorter than, equal to and spanning several
query tiles, and k/v as strided views of a fused QKV tensor. `python -m tests.kernels.extend_cases NAME...`
prints a JSON result map (under TRITON_INTERPRET=1 without a GPU; see tests/kernels/interp.py).
"""
from __future__ import annotations

import json
import sys

import torch

from tests.kernels.cases import CaseFn, check_extend
from tests.kernels.cases import run as _run_cases

RAGGED = {"prefix": (0, 16, 3, 20, 32), "extend": (5, 17, 1, 16, 33)}  # tiles of 16 in every case below


def check_packed(device: str, dtype: torch.dtype, pad_requests: int = 3, pad_rows: int = 21, seed: int = 14,
                 prefix: tuple[int, ...] = (0, 16, 7, 3, 20, 32, 0),
                 extend: tuple[int, ...] = (5, 0, 17, 1, 16, 33, 40), given_table: bool = False,
                 **knobs) -> None:
    """The packed order as a captured pass launches it: requests without tokens among and after the real ones,
    rows of padding after them, and a grid sized for the rows, not the requests: every real row as the
    reference, and no padding row written. `given_table`: the work table is built beforehand, as a captured pass
    builds it once for all its layers."""
    from tests.kernels.reference import make_scenario, reference_attention, tolerance
    from tierlm.kernels.extend_attention import extend_attention
    from tierlm.kernels.packed_tiles import packed_tiles

    sc = make_scenario(list(prefix), list(extend), 4, 2, 32, 1, dtype, device, seed=seed)
    total = sum(extend)
    pad = torch.zeros(pad_rows, *sc.q.shape[1:], dtype=dtype, device=device)
    q, k, v = torch.cat([sc.q, pad]), torch.cat([sc.k, pad[:, :2]]), torch.cat([sc.v, pad[:, :2]])
    indptr = torch.cat([sc.qo_indptr, sc.qo_indptr[-1:].repeat(pad_requests)])
    rows = torch.cat([sc.rows, sc.rows[:1].repeat(pad_requests)])
    prefix_lens = torch.cat([sc.prefix_lens, torch.zeros_like(sc.prefix_lens[:1]).repeat(pad_requests)])
    out = torch.full(q.shape, float("nan"), dtype=dtype, device=device)
    if given_table:
        knobs["tiles"] = packed_tiles(indptr, total + pad_rows, total + pad_rows, 16)
    extend_attention(q, k, v, out, sc.k_buf, sc.v_buf, sc.req_to_token, rows, prefix_lens, indptr, total + pad_rows,
                     32 ** -0.5, block_m=16, block_n=16, num_warps=4, num_stages=1,
                     order="packed", **knobs)
    ref = reference_attention(sc, 32 ** -0.5, new_kv_in_pool=False)
    torch.testing.assert_close(out[:total].cpu().double(), ref, **tolerance(dtype))
    assert out[total:].isnan().all(), "the packed order wrote a padding row"


def check_tiles(device: str, dtype: torch.dtype) -> None:
    """The packed order's work table against the order written out: every request's last q-block request by
    request, then the blocks before them, ...; requests without tokens own no tile, and the tiles past the last
    block (rows of padding) get a rank their request does not reach. Several block sizes and batches, among them
    one request of many blocks (past the 16 ranks the table always searches)."""
    from tierlm.kernels.packed_tiles import packed_tile_count, packed_tiles

    gen = torch.Generator().manual_seed(17)
    for block_m, lens, pad_rows in ((16, [5, 0, 17, 1, 16, 33, 40, 0, 0], 21), (16, [300], 0),
                                    (64, [24] * 64, 0), (16, [3, 64, 2, 0, 100, 17], 40),
                                    (32, torch.randint(0, 90, (37,), generator=gen).tolist(), 7)):
        indptr = torch.tensor([0] + lens, dtype=torch.int32).cumsum(0).to(torch.int32)
        rows = sum(lens) + pad_rows
        table = packed_tiles(indptr.to(device), rows, rows, block_m).cpu()
        blocks = [-(-n // block_m) for n in lens]
        order = [(b, r) for r in range(max(blocks)) for b in range(len(lens)) if blocks[b] > r]
        assert table.shape == (2, packed_tile_count(len(lens), rows, rows, block_m)), (block_m, lens)
        assert table.shape[1] >= len(order), (block_m, lens)
        got = list(zip(table[0].tolist(), table[1].tolist()))
        assert got[:len(order)] == order, (block_m, lens, got[:len(order)], order)
        assert all(0 <= b < len(lens) and r >= blocks[b] for b, r in got[len(order):]), (block_m, lens, got)


def _case(num_heads: int = 4, num_kv_heads: int = 2, seed: int = 0, **kw) -> CaseFn:
    return lambda device, dtype: check_extend(device, dtype, num_heads=num_heads, num_kv_heads=num_kv_heads,
                                              seed=seed, **RAGGED, **kw)


EXTEND_CASES: dict[str, CaseFn] = {
    # the original kernel: every tile masked, request-major launch order, pointer loads
    "extend_legacy": _case(causal_split=False, order="request", tma=False),
    "extend_split": _case(causal_split=True, tma=False),
    "extend_order_request": _case(order="request", seed=1),
    "extend_order_heavy_first": _case(order="heavy_first", seed=2),
    "extend_order_kv_local": _case(order="kv_local", seed=3),
    "extend_prescale_q": _case(prescale_q=True, seed=4),
    "extend_pack2_group2": _case(pack_heads=2, seed=5),
    "extend_pack2_group4": _case(num_heads=8, pack_heads=2, seed=6),
    "extend_pack4_group4_tma": _case(num_heads=8, pack_heads=4, tma=True, seed=7),
    "extend_tma": _case(tma=True, seed=8),
    "extend_tma_legacy_loop": _case(tma=True, causal_split=False, seed=9),
    # a query tile spanning two key tiles (two diagonal tiles), and a key tile reaching below the query tile
    "extend_bm32_bn16": _case(block_m=32, block_n=16, seed=10),
    "extend_bm16_bn32_pack2": _case(block_m=16, block_n=32, pack_heads=2, seed=11),
    "extend_d48_split": _case(head_dim=48, seed=12),  # head_dim below its power-of-two tile: masked columns
    "extend_page4_prefix_stages": _case(page_size=4, prefix_stages=2, maxnreg=128, seed=13),
    "extend_order_packed": _case(order="packed", seed=14),
    # as a captured pass runs it: empty requests, padding rows and requests, a grid for the rows
    "extend_packed_padded": check_packed,
    "extend_packed_padded_pack2": lambda device, dtype: check_packed(device, dtype, pad_requests=9, pad_rows=3,
                                                                     seed=15, pack_heads=2),
    # every request ends in a partial block and nothing is padded: the grid's bound is met exactly
    "extend_packed_tight_grid": lambda device, dtype: check_packed(device, dtype, pad_requests=0, pad_rows=0,
                                                                   seed=16, prefix=(4, 0, 9, 0),
                                                                   extend=(17, 1, 33, 2)),
    "packed_tiles": check_tiles,
    "extend_packed_given_table": lambda device, dtype: check_packed(device, dtype, seed=18, given_table=True),
}


def run(names: list[str], device: str, dtypes: list[torch.dtype]) -> dict[str, str]:
    return _run_cases(names, device, dtypes, cases=EXTEND_CASES)


# also run in fp16 under the interpreter (which gets bfloat16 dots wrong, for the original kernel too): the
# cases whose low-precision path differs (q rounded after scaling, descriptor loads, stacked heads)
HALF_CASES = ("extend_legacy", "extend_prescale_q", "extend_pack2_group2", "extend_tma")

if __name__ == "__main__":
    names = sys.argv[1:] or list(EXTEND_CASES)
    results = run(names, "cpu", [torch.float32])
    results.update(run([n for n in names if n in HALF_CASES], "cpu", [torch.float16]))
    print(json.dumps(results))
