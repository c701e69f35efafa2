"""Decode attention that applies the q/k norm and rotary itself (`decode_attention(rope=...)`) against the
standalone pass followed by the plain kernel, on the raw QKV projection's strided views. Runnable in-process
(GPU) or under Triton's interpreter (`python -m tests.kernels.rope_cases NAME...`, as tests/kernels/cases.py)."""
from __future__ import annotations

import json
import sys

import torch

from tests.kernels.cases import CaseFn, run as run_cases, same_bytes
from tests.kernels.reference import make_scenario


def check_rope_in_stage1(device: str, dtype: torch.dtype, *, num_heads: int, num_kv_heads: int, head_dim: int,
                         norm: bool, max_splits: int, seqs: tuple[int, ...] = (1, 9, 37, 20, 64),
                         seed: int = 0) -> None:
    from tierlm.kernels.decode_attention import decode_attention
    from tierlm.kernels.fused import qk_norm_rope
    from tierlm.kernels.rope_tile import QKRope
    from tierlm.layers.rotary import RotaryEmbedding

    sc = make_scenario([s - 1 for s in seqs], [1] * len(seqs), num_heads, num_kv_heads, head_dim, 1, dtype,
                       device, seed=seed)
    batch, q_size, kv_size = len(seqs), num_heads * head_dim, num_kv_heads * head_dim
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, q_size + 2 * kv_size, generator=gen).to(dtype).to(device)
    rotary = RotaryEmbedding(head_dim, 128, 10000.0, None).to(device)
    weights = ([(torch.rand(head_dim, generator=gen) + 0.5).to(dtype).to(device) for _ in range(2)] if norm
               else [None] * 2)
    rope = QKRope(sc.seq_lens.to(torch.int64) - 1, rotary.cos, rotary.sin, weights[0], weights[1], 1e-6)
    q_raw = qkv[:, :q_size].view(batch, num_heads, head_dim)
    k_raw = qkv[:, q_size:q_size + kv_size].view(batch, num_kv_heads, head_dim)
    v = qkv[:, q_size + kv_size:].view(batch, num_kv_heads, head_dim)
    scale = head_dim ** -0.5

    def attend(q, k, rope_arg):
        k_buf, v_buf = sc.k_buf.clone(), sc.v_buf.clone()
        out = torch.full((batch, num_heads, head_dim), float("nan"), dtype=dtype, device=device)
        mid_o = torch.full((batch, num_heads, max_splits, head_dim), float("nan"), device=device)
        mid_lse = torch.full((batch, num_heads, max_splits), float("nan"), device=device)
        decode_attention(q, k_buf, v_buf, sc.req_to_token, sc.rows, sc.seq_lens, out, mid_o, mid_lse, scale,
                         min_chunk=8, block_n=16, num_warps=4, num_stages=1, new_kv=(k, v, sc.out_loc), rope=rope_arg)
        return out, k_buf, v_buf

    q, k = qk_norm_rope(qkv, rope.positions, rotary.cos, rotary.sin, num_heads, num_kv_heads, head_dim, weights[0],
                        weights[1], rope.eps)
    ref_out, ref_k, ref_v = attend(q, k, None)
    out, k_buf, v_buf = attend(q_raw, k_raw, rope)
    assert same_bytes(v_buf, ref_v), "V stored as given"
    if device == "cpu":  # the interpreter sums in one order: the same bits as the two passes
        assert same_bytes(k_buf, ref_k) and same_bytes(out, ref_out)
    else:  # a compiled reduction may sum a head's squares in another order: one rounding step apart at most
        tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(k_buf.float(), ref_k.float(), **tol)
        torch.testing.assert_close(out.float(), ref_out.float(), **tol)


def _cases() -> dict[str, CaseFn]:
    def case(**kw) -> CaseFn:
        return lambda device, dtype: check_rope_in_stage1(device, dtype, **kw)

    return {
        "rope_norm_gqa2_split": case(num_heads=4, num_kv_heads=2, head_dim=32, norm=True, max_splits=4),
        "rope_norm_gqa4_direct": case(num_heads=8, num_kv_heads=2, head_dim=64, norm=True, max_splits=1, seed=3),
        "rope_plain_gqa1_split": case(num_heads=2, num_kv_heads=2, head_dim=32, norm=False, max_splits=4, seed=5),
    }


ROPE_CASES = _cases()


def run(names: list[str], device: str, dtypes: list[torch.dtype]) -> dict[str, str]:
    return run_cases(names, device, dtypes, ROPE_CASES)


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:] or list(ROPE_CASES), "cpu", [torch.float32])))
