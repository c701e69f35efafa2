"""L2 prefetches before the PDL wait (`tierlm.kernels.l2_prefetch`): how many lines each kernel asks for, and
(on a GPU) that results do not change with them."""
from __future__ import annotations

from unittest import mock

import pytest
import torch

from tierlm.kernels import l2_prefetch
from tierlm.kernels.l2_prefetch import ENV, l2_prefetch_lines, lines_per_row

def test_lines_cover_a_row_in_a_power_of_two():
    assert lines_per_row(128, 2) == (2, 64)  # a bf16 head of 128: two 128-byte lines
    assert lines_per_row(128, 1) == (1, 128)  # fp8
    assert lines_per_row(192, 2) == (4, 64)  # three lines, rounded up; the kernel clamps the fourth
    assert lines_per_row(1, 4) == (1, 32)


@pytest.mark.parametrize("mode,attention,gemm", [("0", (0, 1), (0, 1)), ("attention", (2, 64), (0, 1)),
                                                 ("1", (2, 64), (2, 64)), ("nonsense", (2, 64), (2, 64))])
def test_modes(monkeypatch, mode, attention, gemm):
    monkeypatch.setenv(ENV, mode)
    with mock.patch.object(l2_prefetch, "interpreted", return_value=False):
        assert l2_prefetch_lines(True, "attention", 128, 2) == attention
        assert l2_prefetch_lines(True, "gemm", 128, 2) == gemm  # a K tile of 128 bf16 columns


def test_none_without_pdl_or_when_interpreted(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert l2_prefetch_lines(False, "attention", 128, 2) == (0, 1)
    with mock.patch.object(l2_prefetch, "interpreted", return_value=True):
        assert l2_prefetch_lines(True, "gemm", 128, 2) == (0, 1)


needs_hopper = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                                  reason="PDL launches (and so prefetches) need a Hopper GPU")


@needs_hopper
@pytest.mark.parametrize("batch,splits", [(3, 4), (64, 1)])
def test_decode_attention_same_with_and_without(monkeypatch, batch, splits):
    from tierlm.kernels.decode_attention import decode_attention

    gen = torch.Generator(device="cuda").manual_seed(batch)
    heads, kv_heads, dim, slots = 16, 8, 128, 4096
    k_buf = torch.randn(slots, kv_heads, dim, generator=gen, device="cuda").to(torch.bfloat16)
    v_buf = torch.randn(slots, kv_heads, dim, generator=gen, device="cuda").to(torch.bfloat16)
    lens = torch.randint(1, 1500, (batch,), generator=gen, device="cuda").to(torch.int32)
    table = torch.randint(0, slots, (batch, 1500), generator=gen, device="cuda", dtype=torch.int32)
    rows = torch.arange(batch, device="cuda", dtype=torch.int32)
    q = torch.randn(batch, heads, dim, generator=gen, device="cuda").to(torch.bfloat16)
    outs = []
    for mode in ("0", "1"):
        monkeypatch.setenv(ENV, mode)
        out = torch.empty_like(q)
        mid_o = torch.empty(batch, heads, splits, dim, device="cuda")
        mid_lse = torch.empty(batch, heads, splits, device="cuda")
        outs.append(decode_attention(q, k_buf.clone(), v_buf.clone(), table, rows, lens, out, mid_o, mid_lse,
                                     dim ** -0.5).clone())
    assert torch.equal(outs[0], outs[1])


@needs_hopper
@pytest.mark.parametrize("rows,split", [(16, 1), (128, 4)])
def test_skinny_gemm_same_with_and_without(monkeypatch, rows, split):
    from tierlm.kernels.skinny_gemm import SkinnyConfig, skinny_gemm, split_counters

    gen = torch.Generator(device="cuda").manual_seed(rows)
    x = torch.randn(rows, 1024, generator=gen, device="cuda").to(torch.bfloat16)
    w = (torch.randn(4096, 1024, generator=gen, device="cuda") * 0.02).to(torch.bfloat16)
    cfg = SkinnyConfig(split_k=split)
    outs = []
    for mode in ("0", "1"):
        monkeypatch.setenv(ENV, mode)
        outs.append(skinny_gemm(x, w, config=cfg, counters=split_counters(4096, cfg, x.device)))
    assert torch.equal(outs[0], outs[1])
