"""Decoupled rotary kernel cases (`tierlm.kernels.decoupled_rope`) against the torch layer's arithmetic
(`DecoupledRotary.rotate_torch`), bit for bit, runnable in-process on a GPU or in a subprocess under Triton's
interpreter: `python -m tests.kernels.decoupled_rope_cases NAME...` (see cases.py)."""
from __future__ import annotations

import json
import sys

import torch

from tests.kernels.cases import CaseFn, run, same_bytes

YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "mscale": 1.0,
        "mscale_all_dim": 0.5}


def check_decoupled_rope(device: str, dtype: torch.dtype, *, style: str, tokens: int = 7, heads: int = 3,
                         dim: int = 16, scaling: dict | None = None, seed: int = 0, in_place: bool = False) -> None:
    """`in_place`: q rotated into its own strided view (`q_out=q`), the rest of its rows untouched."""
    from tierlm.kernels.decoupled_rope import decoupled_rope
    from tierlm.layers.decoupled_rotary import DecoupledRotary

    rope = DecoupledRotary(dim, 64, 10000.0, scaling, style, 64).to(device)
    gen = torch.Generator().manual_seed(seed)
    # q and k as the model slices them: the rope part of wider rows (row strides past d)
    q_rows = torch.randn(tokens, heads, dim + 8, generator=gen).to(device=device, dtype=dtype)
    k_rows = torch.randn(tokens, dim + 24, generator=gen).to(device=device, dtype=dtype)
    q, k = q_rows[..., 8:], k_rows[:, 24:]
    positions = torch.randint(0, 64, (tokens,), generator=gen).to(device)
    ref_q, ref_k = rope.rotate_torch(positions, q, k)
    head = q_rows[..., :8].clone()
    got_q, got_k = decoupled_rope(positions, q, k, rope.cos, rope.sin, style, q if in_place else None)
    if in_place:
        assert got_q.data_ptr() == q.data_ptr() and same_bytes(q_rows[..., :8], head)
    assert got_q.dtype == got_k.dtype == dtype and got_q.shape == q.shape and got_k.shape == k.shape
    assert same_bytes(got_q, ref_q) and same_bytes(got_k, ref_k)


def _cases() -> dict[str, CaseFn]:
    def rope(**kw) -> CaseFn:
        return lambda device, dtype: check_decoupled_rope(device, dtype, **kw)

    return {
        "rope_half": rope(style="half"),
        "rope_interleave_yarn": rope(style="interleave", scaling=YARN, seed=1),
        "rope_complex": rope(style="complex", seed=2),
        # more heads than one program's rows: the key row alone in the second program, or beside heads
        "rope_key_alone": rope(style="interleave", heads=32, dim=64, tokens=3, seed=3),
        "rope_many_heads": rope(style="complex", heads=40, dim=32, tokens=2, seed=5),
        "rope_one_token": rope(style="half", tokens=1, heads=16, dim=64, seed=4),
        "rope_complex_in_place": rope(style="complex", seed=6, in_place=True),
        "rope_many_heads_in_place": rope(style="half", heads=40, dim=32, tokens=5, seed=7, in_place=True),
        "rope_interleave_in_place": rope(style="interleave", heads=16, dim=64, tokens=4, seed=8, in_place=True),
    }


DECOUPLED_ROPE_CASES: dict[str, CaseFn] = _cases()

if __name__ == "__main__":
    names = sys.argv[1:] or list(DECOUPLED_ROPE_CASES)
    print(json.dumps(run(names, "cpu", [torch.float32], cases=DECOUPLED_ROPE_CASES)))
