"""Captured mixed passes' padded layout, checked without CUDA: `MixedGraphRunner(capture=False)` runs the same
padded passes eagerly (prefill chunks, padding, then the decodes padded to a decode graph size, fixed extend
grid) through the Triton backend under the interpreter, and must give the tokens of the unpadded engine; so
must its prefill passes without decodes (case ARCH:prefill).

`python -m tests.engine.mixed_graph_cases ARCH...` prints a JSON map arch -> "ok" or the failure; run under
TRITON_INTERPRET=1 without a GPU (see tests/kernels/interp.py).
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

from tests.engine.mixed_cases import main as run_cases
from tests.engine.test_mixed_batches import PROMPTS, run_staggered
from tierlm.engine import engine as engine_module
from tierlm.engine.mixed_graph import MixedGraphRunner
from tierlm.engine.model_runner import ModelRunner
from tierlm.sampling_params import SamplingParams
from tierlm.utils.tiny_model import make_tiny_model

BUDGET = 14  # 8 rows kept for the decodes (aligned to 8), 6 for prefill chunks of up to 5 tokens
OPTS = dict(attention_backend="triton", every=2, prompts=PROMPTS[:3], rounds=1,
            params=SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, detokenize=False))
UNPATCHED = (ModelRunner.make_attention, engine_module.mixed_graph_align)


def install(runs: list[tuple[int, int]], decode_sizes: tuple = (1, 2, 4, 8), prefill_tokens: tuple = ()) -> None:
    """Every engine built from here on serves mixed steps (and prefill passes of `prefill_tokens` rows at most)
    through an eager padded runner (2 chunks at most); it replaces an earlier `install`."""
    real_make = UNPATCHED[0]

    def make_attention(self, req_to_token, token_ids):
        attn = real_make(self, req_to_token, token_ids)
        attn.init_graph_buffers(8, req_to_token.shape[1])
        self.mixed = MixedGraphRunner(self.model, attn, req_to_token, BUDGET, list(decode_sizes), max_chunks=2,
                                      capture=False, prefill_tokens=prefill_tokens)
        real_run = self.mixed.run
        self.mixed.run = lambda b, index: runs.append((b.num_multi_token, b.batch_size)) or real_run(b, index)
        return attn

    ModelRunner.make_attention = make_attention
    engine_module.mixed_graph_align = lambda config: 8


def uninstall() -> None:
    ModelRunner.make_attention, engine_module.mixed_graph_align = UNPATCHED


@functools.cache
def reference(arch: str, root: Path) -> tuple[Path, list[list[int]]]:
    """The arch's model and the tokens of the unpadded engine, shared by the arch's cases."""
    uninstall()
    model = make_tiny_model(root / arch, arch=arch)
    ref, _, _ = run_staggered(model, **OPTS)
    return model, ref


def check(name: str, root: Path) -> str:
    """NAME is an arch (mixed steps through padded passes) or ARCH:prefill (prefill passes, mixed steps off)."""
    arch, _, case = name.partition(":")
    model, ref = reference(arch, root)
    runs: list[tuple[int, int]] = []
    if case == "prefill":  # chunks of up to 5 tokens (some after a cached prefix) padded to 4 or 8 rows
        install(runs, decode_sizes=(), prefill_tokens=(4, 8))
        got, modes, _ = run_staggered(model, **OPTS)
        if not runs or any(size != chunks for chunks, size in runs):
            return f"padded runs {runs} for modes {modes}"
        return "ok" if got == ref else f"tokens differ: {got} vs {ref}"
    install(runs)
    got, modes, _ = run_staggered(model, enable_mixed_chunk=True, max_mixed_tokens=BUDGET, **OPTS)
    # every mixed step ran padded (chunks, then decodes); small prefill passes may too
    if sum(size > chunks for chunks, size in runs) != modes.count("mixed") or "mixed" not in modes:
        return f"padded runs {runs} for modes {modes}"
    return "ok" if got == ref else f"tokens differ: {got} vs {ref}"


if __name__ == "__main__":
    run_cases(sys.argv[1:], check)
