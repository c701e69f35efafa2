"""The fused sampler under penalties (`kernels.race_sample.pick_tokens(penalties=...)`): greedy rows pick the
argmax of `engine.penalties.penalize`'s logits, token for token; temperature rows draw from its softmax (a
chi-square test); every penalized row's token is counted in its own marks and no other row's are touched (GPU, or
the Triton interpreter)."""
from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("triton")

from tests.kernels.interp import run_script  # noqa: E402

SCRIPT = textwrap.dedent("""
    import torch
    from tierlm.engine.penalties import penalize
    from tierlm.kernels.race_sample import PickScratch, pick_tokens
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    scratch = PickScratch(torch.device(dev))
    for dtype in ([torch.float32] if dev == "cpu" else [torch.float32, torch.bfloat16]):
        rows, vocab = 6, 300
        logits = (torch.randn(rows, vocab, generator=gen) * 3).to(dtype)
        marks = torch.zeros(rows + 2, vocab, dtype=torch.int32)
        marks[1:] = torch.randint(0, 3, (rows + 1, vocab), generator=gen, dtype=torch.int32) * (
            torch.rand(rows + 1, vocab, generator=gen) < 0.2)
        slots = torch.tensor([3, 0, 1, 5, 0, 7], dtype=torch.int32)  # rows 1 and 4 without penalties
        plain = logits.float().argmax(-1)
        marks[slots[0], plain[0]] = 7  # row 0's top token in its prompt and sampled three times: it must move
        factors = torch.tensor([[1.3, 0.5, 0.25], [1, 0, 0], [0.7, -1.0, 2.0], [2.0, 0, 0], [1, 0, 0],
                                [1.0, 1.5, -0.5]], dtype=torch.float32)
        expect = penalize(logits.float(), marks[slots.long()], factors[:, 0], factors[:, 1], factors[:, 2])
        before = marks.clone()
        marks_d = marks.clone().to(dev)
        toks = pick_tokens(logits.to(dev), None, 2**40, scratch, quarter=4,
                           penalties=(marks_d, slots.to(dev), factors.view(-1).to(dev)))
        assert toks.cpu().tolist() == expect.argmax(-1).tolist(), (toks, expect.argmax(-1))
        assert (toks.cpu() != plain).any(), "the penalties must move some argmax (else the test proves nothing)"
        after = marks_d.cpu()
        for r, s in enumerate(slots.tolist()):
            if s:
                before[s, toks[r]] += 2
        assert torch.equal(after, before), "only the penalized rows' tokens are counted, each in its own row"
        # a greedy row among sampled ones, and a cold temperature: the penalized argmax
        temps = torch.tensor([1e-4, 0.0, 1e-4, 0.0, 1e-4, 1e-4], device=dev)
        marks_d = marks.clone().to(dev)
        toks = pick_tokens(logits.to(dev), temps, 2**41, scratch, quarter=4,
                           penalties=(marks_d, slots.to(dev), factors.view(-1).to(dev)))
        assert toks.cpu().tolist() == expect.argmax(-1).tolist(), (toks, expect.argmax(-1))
    # draws follow softmax(penalized / T): each of n rows has its own slot holding the same marks
    n = 600 if dev == "cpu" else 100_000
    vocab = 11
    row = torch.randn(vocab, generator=gen) * 1.5
    mark_row = torch.tensor([0, 1, 2, 4, 3, 0, 0, 6, 1, 0, 2], dtype=torch.int32)
    marks = mark_row.expand(n + 1, vocab).contiguous()
    factors = torch.tensor([1.4, 0.3, 0.6]).repeat(n)
    slots = torch.arange(1, n + 1, dtype=torch.int32)
    temp = 0.8
    toks = pick_tokens(row.to(dev).expand(n, vocab).contiguous(), torch.full((n,), temp, device=dev), 2**42, scratch,
                       penalties=(marks.to(dev), slots.to(dev), factors.to(dev)))
    p = torch.softmax(penalize(row[None].double(), mark_row[None], torch.tensor([1.4], dtype=torch.float64),
                               torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.6], dtype=torch.float64))[0]
                      / temp, -1)
    counts = torch.bincount(toks.cpu(), minlength=vocab).double()
    keep = p * n >= 5
    chi2 = (((counts - n * p) ** 2) / (n * p))[keep].sum().item()
    dof = int(keep.sum()) - 1
    assert chi2 < dof + 6 * (2 * dof) ** 0.5, (chi2, dof)
    print("ok")
""")


def test_fused_pick_under_penalties():
    run_script(SCRIPT, timeout=600)
