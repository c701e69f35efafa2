"""The engine's steps with the fused token pick (`kernels.race_sample.pick_tokens`, what a CUDA device runs):
the kernel also writes each token where the next decode step reads its input, so the engine launches no store
of its own. Greedy requests give the torch sampler's tokens, alone and beside sampled ones, over prefill,
mixed and decode passes, with and without overlap; a seeded request still takes the torch path and its
tokens reach the table through the sink's store (an engine on the CPU, the kernel under Triton's interpreter,
also where a GPU is present)."""
from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("triton")

from tests.kernels.interp import run_script  # noqa: E402

SCRIPT = textwrap.dedent("""
    import tempfile
    from pathlib import Path
    import torch
    import tierlm.kernels.race_sample as race_module
    from tests.conftest import CPU_OPTS
    from tests.engine.test_mixed_batches import PROMPTS
    from tierlm.config import EngineConfig
    from tierlm.engine.engine import Engine
    from tierlm.sampling_params import SamplingParams
    from tierlm.utils.tiny_model import make_tiny_model

    stored = []
    pick = race_module.pick_tokens
    penalized_launches = []
    race_module.pick_tokens = lambda *a, **k: (stored.append(a[4] is not None),
                                               k.get("penalties") is not None and penalized_launches.append(1),
                                               pick(*a, **k))[2]

    def run(model, fused, kinds, **opts):
        engine = Engine(EngineConfig(model=str(model), **{**CPU_OPTS, "max_prefill_tokens": 5, **opts}))
        engine.sampler._fused = fused  # what a CUDA device sets
        engine.sampler.fused_penalties = True  # the penalized kernel too
        queue = [(f"{rnd}-{i}", p) for rnd in range(2) for i, p in enumerate(PROMPTS)]
        outs = {rid: [] for rid, _ in queue}
        step = n = 0
        while queue or engine.has_unfinished():
            if queue and step % 2 == 0:
                kind = kinds[n % len(kinds)]
                n += 1
                penalties = dict(repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.6) \
                    if kind.startswith("penalized") else {}
                engine.add_request(*queue.pop(0), SamplingParams(
                    temperature=0.0 if kind in ("greedy", "penalized") else 0.8,
                    seed=7 if kind.endswith("seeded") else None, max_tokens=9, ignore_eos=True, detokenize=False,
                    **penalties))
            for o in engine.step():
                assert o.error is None
                outs[o.request_id].extend(o.new_token_ids)
            step += 1
        engine.close()
        return list(outs.values())

    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "qwen3", arch="qwen3")
        for opts in ({}, {"overlap_schedule": False}, {"enable_mixed_chunk": True, "max_mixed_tokens": 7}):
            ref = run(model, False, ["greedy"], **opts)
            assert not stored
            got = run(model, True, ["greedy"], **opts)
            assert got == ref, (opts, got, ref)
            assert stored and all(stored), "a greedy step with a sink launched the kernel without its store"
            stored.clear()
            kinds = ["greedy", "sampled", "greedy", "seeded"]
            ref, got = run(model, False, kinds, **opts), run(model, True, kinds, **opts)
            for i, (a, b) in enumerate(zip(ref, got)):
                if kinds[i % len(kinds)] != "sampled":  # greedy rows, and the seeded one's own generator
                    assert a == b, (opts, i, a, b)
            stored.clear()
            # penalized rows (greedy, sampled, seeded) beside plain ones: the kernel applies and counts the
            # penalties of the rows it picks, torch those of a batch with a seeded row
            kinds = ["penalized", "greedy", "penalized-sampled", "penalized", "penalized-seeded", "sampled"]
            ref, got = run(model, False, kinds, **opts), run(model, True, kinds, **opts)
            plain = run(model, False, ["greedy"], **opts)
            assert ref[0] != plain[0], "the penalties must change a greedy output (else this proves nothing)"
            for i, (a, b) in enumerate(zip(ref, got)):
                if kinds[i % len(kinds)] in ("penalized", "greedy", "penalized-seeded"):
                    assert a == b, (opts, i, a, b)
            assert penalized_launches, "no step launched the kernel with penalties"
            penalized_launches.clear()
            stored.clear()
    print("ok")
""")


def test_fused_picks_give_the_torch_samplers_tokens_through_the_engine():
    run_script(SCRIPT, timeout=600, interpreted=True)
