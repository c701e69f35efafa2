"""A step's metadata kernels (`tierlm.kernels.step_metadata`) against torch indexing, on the GPU or under the
Triton interpreter: the token and slot scatters and a decode graph's padded inputs."""
from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("triton")

from tests.kernels.interp import run_script  # noqa: E402

SCRIPT = textwrap.dedent("""
    import torch
    from tierlm.kernels.step_metadata import pad_decode_inputs, scatter_2d
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)

    # scatters: int32 (as uploaded) and int64 indices; int64 values narrowed to the int32 table; counts of one, of
    # more than a block and none
    for n, index_dtype in ((1, torch.int32), (300, torch.int32), (17, torch.int64), (0, torch.int32)):
        table = torch.randint(-5, 5, (40, 50), generator=gen, dtype=torch.int32).to(dev)
        want = table.clone()
        flat = torch.randperm(40 * 50, generator=gen)[:n]  # distinct (row, col) pairs
        rows, cols = (flat // 50).to(index_dtype), (flat % 50).to(index_dtype)
        values = torch.randint(0, 2**31 - 1, (n,), generator=gen, dtype=torch.int64)
        want[rows.long(), cols.long()] = values.to(torch.int32).to(dev)
        scatter_2d(table, rows.to(dev), cols.to(dev), values.to(dev))
        assert torch.equal(table, want), (n, index_dtype)
    view = torch.zeros(6, 64, dtype=torch.int32, device=dev)[:, :8]  # a row stride other than the width
    scatter_2d(view, torch.tensor([5, 0], device=dev), torch.tensor([7, 1], device=dev),
               torch.tensor([11, 12], device=dev))
    assert view[5, 7] == 11 and view[0, 1] == 12 and int(view.sum()) == 23

    # the graph's inputs: n real entries copied (positions widened to int64), n..size the dummy request, the rest
    # of the static buffers untouched
    for n, size in ((1, 1), (3, 8), (300, 304), (5, 5)):
        rows = torch.randint(0, 99, (n,), generator=gen, dtype=torch.int32).to(dev)
        pos = torch.randint(0, 4000, (n,), generator=gen, dtype=torch.int32).to(dev)
        lens = pos + 1
        r_dst = torch.full((320,), -7, dtype=torch.int32, device=dev)
        p_dst = torch.full((320,), -7, dtype=torch.int64, device=dev)
        l_dst = torch.full((320,), -7, dtype=torch.int32, device=dev)
        pad_decode_inputs(rows, pos, lens, r_dst, p_dst, l_dst, size, 99)
        assert torch.equal(r_dst[:n], rows) and torch.equal(p_dst[:n], pos.long()) and torch.equal(l_dst[:n], lens)
        assert (r_dst[n:size] == 99).all() and (p_dst[n:size] == 0).all() and (l_dst[n:size] == 1).all()
        assert (r_dst[size:] == -7).all() and (p_dst[size:] == -7).all() and (l_dst[size:] == -7).all()
    print("ok")
""")


def test_step_metadata_kernels_match_torch():
    run_script(SCRIPT)
