"""The fused temperature sampler (`kernels.race_sample`) draws from softmax(logits / T): a chi-square test of
its frequencies, -inf entries never drawn, a cold temperature picks the argmax, keys give independent streams
and the engine's sampler takes it for a batch of temperature rows (GPU, or the Triton interpreter)."""
from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("triton")

from tests.kernels.interp import run_script  # noqa: E402

SCRIPT = textwrap.dedent("""
    import torch
    from tierlm.kernels.race_sample import race_sample
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    n = 600 if dev == "cpu" else 200_000
    gen = torch.Generator().manual_seed(0)
    for dtype in ([torch.float32] if dev == "cpu" else [torch.float32, torch.bfloat16]):
        vocab = 13
        row = (torch.randn(vocab, generator=gen) * 1.5).to(dtype)
        row[4] = float("-inf")
        for temp in (0.6, 1.3):
            logits = row.to(dev).expand(n, vocab).contiguous()
            toks = race_sample(logits, torch.full((n,), temp, device=dev), 2**40 + int(temp * 10), quarter=4)
            counts = torch.bincount(toks.cpu(), minlength=vocab).double()
            p = torch.softmax(row.double() / temp, -1)
            assert counts[4] == 0, "a -inf entry was drawn"
            keep = p * n >= 5  # chi-square over the cells with enough expected draws
            chi2 = (((counts - n * p) ** 2) / (n * p))[keep].sum().item()
            dof = int(keep.sum()) - 1
            assert chi2 < dof + 6 * (2 * dof) ** 0.5, (dtype, temp, chi2, dof)
        cold = torch.randn(3, 300, generator=gen).to(dtype).to(dev)
        cold[1, :] = float("-inf")
        toks = race_sample(cold, torch.full((3,), 1e-4, device=dev), 2**41, quarter=32)
        assert toks[0] == cold[0].float().argmax() and toks[2] == cold[2].float().argmax(), toks
        assert toks[1] == 0, "a row of -inf gets token 0"
        # uniform over 1000 entries in 4 slices per row: keys one batch apart (and the rows) give independent
        # draws, so a row repeats under the other key with p = 1e-3 and the 16 draws of a key hold about 0.12
        # equal pairs; four or more of either happens with p < 1e-5, a shared or unkeyed stream always does
        rows = 16
        flat = torch.zeros(rows, 1000, dtype=dtype, device=dev)
        a, b = (race_sample(flat, torch.ones(rows, device=dev), k, quarter=64) for k in (2**42, 2**42 + rows))
        assert (a != b).sum() > rows - 4 and len(set(a.tolist())) > rows - 4, (a, b)
    import tierlm.kernels.race_sample as race_module
    from tierlm.engine.sampler import FUSED_MIN_ROWS, Sampler
    from tierlm.sampling_params import SamplingParams
    calls = []
    fused = race_module.race_sample
    race_module.race_sample = lambda *a, **k: calls.append(a[0].shape) or fused(*a, **k)
    sampler = Sampler(torch.device(dev), seed=0)
    sampler._fused = True  # what a CUDA device sets; here the kernels may run interpreted
    sampler.warm_up(40, torch.float32)
    logits = torch.full((FUSED_MIN_ROWS + 1, 40), float("-inf"), device=dev)
    logits[:, 7] = 0.0  # the only entry with any probability
    logits[0, 9] = 5.0  # row 0 is greedy: its argmax
    params = [SamplingParams(temperature=0.0)] + [SamplingParams(temperature=0.8)] * FUSED_MIN_ROWS
    toks = sampler.sample(logits, params, [None] * len(params))
    assert toks[0] == 9 and (toks[1:] == 7).all(), toks
    assert calls == [(FUSED_MIN_ROWS, 40), (FUSED_MIN_ROWS, 40)], calls  # the warm-up, then the temperature rows
    print("ok")
""")


def test_race_sample_draws_from_the_tempered_softmax():
    run_script(SCRIPT, timeout=600)


def test_exp1_draws_match_float64():
    run_script("from tests.kernels.race_noise_probe import main; main()", timeout=300)
