"""The fused sampler (`kernels.race_sample`) draws from softmax(logits / T): a chi-square test of its
frequencies, -inf entries never drawn, a cold temperature picks the argmax, keys give independent streams and
the engine's sampler takes it for a batch of temperature rows, or for any unseeded, unfiltered batch when it
stores the tokens too. Its greedy rows are torch's argmax, token for token (GPU, or the Triton interpreter)."""
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
        for temp in ((0.6,) if dev == "cpu" else (0.6, 1.3)):  # interpreted: a program per draw, the sharper test
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
    from tierlm.kvcache.req_table import TokenSink
    from tierlm.sampling_params import SamplingParams
    calls = []
    fused = race_module.pick_tokens
    race_module.pick_tokens = lambda *a, **k: calls.append((a[0].shape[0], a[1] is None, a[4] is not None)
                                                           + ((True,) if k.get("penalties") is not None else ())
                                                           ) or fused(*a, **k)
    sampler = Sampler(torch.device(dev), seed=0, fused_penalties=True)
    sampler._fused = True  # what a CUDA device sets; here the kernels may run interpreted
    sampler.warm_up(40, torch.float32)
    assert sorted(calls) == sorted([(FUSED_MIN_ROWS, g, s) for g in (True, False) for s in (True, False)]
                                   + [(FUSED_MIN_ROWS, g, True, True) for g in (True, False)]), calls
    calls.clear()
    logits = torch.full((FUSED_MIN_ROWS + 1, 40), float("-inf"), device=dev)
    logits[:, 7] = 0.0  # the only entry with any probability
    logits[0, 9] = 5.0  # row 0 is greedy: its argmax
    params = [SamplingParams(temperature=0.0)] + [SamplingParams(temperature=0.8)] * FUSED_MIN_ROWS
    toks = sampler.sample(logits, params, [None] * len(params))
    assert toks[0] == 9 and (toks[1:] == 7).all(), toks
    assert calls == [(FUSED_MIN_ROWS + 1, False, False)], calls  # one launch, the greedy row in it
    # with a sink every unseeded, unfiltered batch takes the kernel, which stores the tokens too
    table = torch.full((4, 12), -1, dtype=torch.int32, device=dev)
    sites = (torch.tensor([2, 0, 3], dtype=torch.int32, device=dev), torch.tensor([5, 11, 0], dtype=torch.int32,
                                                                                   device=dev))
    few = logits[:3].clone()
    for temps, seeded, fused_call in (([0.0] * 3, False, (3, True, True)), ([0.0, 0.5, 0.0], False, (3, False, True)),
                                      ([0.0, 0.5, 0.0], True, None)):
        calls.clear()
        table.fill_(-1)
        gens = [None, torch.Generator(device=dev).manual_seed(1) if seeded else None, None]
        toks = sampler.sample(few, [SamplingParams(temperature=t) for t in temps], gens, TokenSink(table, *sites))
        assert toks.tolist() == [9, 7, 7], toks
        assert table[sites[0].long(), sites[1].long()].tolist() == [9, 7, 7] and int((table >= 0).sum()) == 3
        assert calls == ([fused_call] if fused_call else []), calls  # a seeded row: torch, then the sink's store
    print("ok")
""")


def test_race_sample_draws_from_the_tempered_softmax():
    run_script(SCRIPT, timeout=600)


def test_exp1_draws_match_float64():
    run_script("from tests.kernels.race_noise_probe import main; main()", timeout=300)


GREEDY = textwrap.dedent("""
    import torch
    from tierlm.kernels.race_sample import PickScratch, pick_tokens
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(3)
    scratch = PickScratch(torch.device(dev))
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        # the last: a block per program, and more rows than the earlier shapes' scratch holds (12 interpreted)
        for batch, vocab, quarter, programs in ((1, 1000, 16, 8), (3, 5000, 32, 8), (5, 777, 8, 64), (2, 64, 16, 4),
                                                (70 if dev == "cuda" else 12, 300, 8, 1024)):
            x = torch.randn(batch, vocab, generator=gen).to(dtype)
            x[0, vocab // 3] = x[0, vocab - 1] = x[0, 5] = x.float().max() + 1  # ties across slices: the lowest wins
            x[-1, :] = x[-1, 0]  # a flat row: entry 0
            x = x.to(dev)
            rows = torch.randperm(batch, generator=gen).to(torch.int32).to(dev)
            pos = torch.randint(0, 40, (batch,), generator=gen, dtype=torch.int32).to(dev)
            for store in (False, True):
                table = torch.full((batch, 40), -1, dtype=torch.int32, device=dev)
                toks = pick_tokens(x, None, 2**32, scratch, (table, rows, pos) if store else None, quarter=quarter,
                                   programs=programs)
                assert torch.equal(toks, x.argmax(-1)), (dtype, batch, vocab, toks, x.argmax(-1))
                written = table[rows.long(), pos.long()]
                assert torch.equal(written, toks.int() if store else torch.full_like(written, -1))
                assert int((table >= 0).sum()) == (batch if store else 0)
            # rows at temperature 0 in a sampling launch are the same argmax
            temps = torch.tensor([0.0 if i % 2 == 0 else 0.7 for i in range(batch)], device=dev)
            toks = pick_tokens(x, temps, 2**40, scratch, quarter=quarter, programs=programs)
            assert torch.equal(toks[::2], x.argmax(-1)[::2]), (toks, x.argmax(-1))
    assert scratch.counters.abs().sum() == 0, "a row's counter was not zeroed for the next launch"
    x = torch.full((2, 300), float("-inf"), device=dev)
    x[1, 5], x[1, 7] = float("nan"), -1e30
    assert pick_tokens(x, None, 2**32, scratch, quarter=8, programs=8).tolist() == [0, 7], "-inf / NaN never win"
    print("ok")
""")


def test_greedy_picks_are_torch_argmax_and_stored_at_the_sites():
    run_script(GREEDY, timeout=600)
