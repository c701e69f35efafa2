"""Captured mixed passes' padded layout, checked without CUDA: `MixedGraphRunner(capture=False)` runs the same
padded passes eagerly (prefill chunks, padding, then the decodes padded to a decode graph size, fixed extend
grid) through the Triton backend under the interpreter, and must give the tokens of the unpadded engine; so
must its prefill passes without decodes (case ARCH:prefill), a prefill pass of many short prompts at once, as
many as a captured pass holds (case ARCH:burst), and decode steps through `DecodeGraphRunner(capture=False)`,
padded to its ladder with the inputs and slots its pad launch reads from the tables (case ARCH:decode).

`python -m tests.engine.mixed_graph_cases ARCH...` prints a JSON map arch -> "ok" or the failure; run under
TRITON_INTERPRET=1 without a GPU (see tests/kernels/interp.py).
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

from tests.conftest import CPU_OPTS
from tests.engine.mixed_cases import main as run_cases
from tests.engine.test_mixed_batches import PROMPTS, run_staggered
from tierlm.config import EngineConfig
from tierlm.engine.cuda_graph import DecodeGraphRunner
from tierlm.engine import engine as engine_module
from tierlm.engine.engine import Engine
from tierlm.engine.mixed_graph import MAX_CHUNKS, MixedGraphRunner
from tierlm.engine.model_runner import ModelRunner
from tierlm.sampling_params import SamplingParams
from tierlm.utils.tiny_model import make_tiny_model

BUDGET = 14  # 8 rows kept for the decodes (aligned to 8), 6 for prefill chunks of up to 5 tokens
OPTS = dict(attention_backend="triton", every=2, prompts=PROMPTS[:3], rounds=1,
            params=SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, detokenize=False))
UNPATCHED = (ModelRunner.make_attention, engine_module.mixed_graph_align)


def install(runs: list[tuple[int, int]], decode_sizes: tuple = (1, 2, 4, 8), prefill_tokens: tuple = (),
            max_chunks: int = 2) -> None:
    """Every engine built from here on serves mixed steps (and prefill passes of `prefill_tokens` rows at most)
    through an eager padded runner (`max_chunks` chunks at most); it replaces an earlier `install`."""
    real_make = UNPATCHED[0]

    def make_attention(self, req_to_token, token_ids):
        attn = real_make(self, req_to_token, token_ids)
        attn.init_graph_buffers(8, req_to_token.shape[1])
        self.mixed = MixedGraphRunner(self.model, attn, req_to_token, BUDGET, list(decode_sizes), max_chunks=max_chunks,
                                      capture=False, prefill_tokens=prefill_tokens)
        real_run = self.mixed.run
        self.mixed.run = lambda b, index: runs.append((b.num_multi_token, b.batch_size)) or real_run(b, index)
        return attn

    ModelRunner.make_attention = make_attention
    engine_module.mixed_graph_align = lambda config: 8


def install_decode(runs: list[tuple[int, int]]) -> None:
    """Every engine built from here on serves decode steps of up to 4 requests through an eager padded decode
    graph runner; `runs` gets each step's padded size and the backend's decode variant it ran."""
    real_make = UNPATCHED[0]

    def make_attention(self, req_to_token, token_ids):
        attn = real_make(self, req_to_token, token_ids)
        self.graphs = DecodeGraphRunner(self.model, attn, req_to_token, token_ids, 4, capture=False)
        real_forward = self.graphs._forward
        self.graphs._forward = lambda bs, variant: runs.append((bs, variant)) or real_forward(bs, variant)
        return attn

    ModelRunner.make_attention = make_attention


def uninstall() -> None:
    ModelRunner.make_attention, engine_module.mixed_graph_align = UNPATCHED


@functools.cache
def reference(arch: str, root: Path) -> tuple[Path, list[list[int]]]:
    """The arch's model and the tokens of the unpadded engine, shared by the arch's cases."""
    uninstall()
    model = make_tiny_model(root / arch, arch=arch)
    ref, _, _ = run_staggered(model, **OPTS)
    return model, ref


def burst(model: Path, prompts: list[list[int]]) -> list[list[int]]:
    """Greedy tokens of `prompts` queued at once (one prefill pass holds them all)."""
    engine = Engine(EngineConfig(model=str(model), **{**CPU_OPTS, "attention_backend": "triton",
                                                      "max_prefill_tokens": 64}))
    for i, prompt in enumerate(prompts):
        engine.add_request(str(i), prompt, OPTS["params"])
    outs: dict[str, list[int]] = {str(i): [] for i in range(len(prompts))}
    while engine.has_unfinished():
        for o in engine.step():
            assert o.error is None
            outs[o.request_id].extend(o.new_token_ids)
    engine.kv.check_no_leak(engine.live_pages())
    engine.close()
    return list(outs.values())


def warm_up_orders(model: Path) -> list[tuple[str, int]]:
    """(launch order, requests) of every extend launch of an engine's start-up warm-up, with prefill passes of up
    to `MAX_CHUNKS` prompts and 256 tokens padded as captured ones."""
    from tierlm.attention import triton_backend
    from tierlm.engine import startup

    launches: list[tuple[str, int]] = []
    real = triton_backend.extend_attention

    def recording(*args, **kwargs):
        launches.append((kwargs["order"], args[9].shape[0] - 1))  # qo_indptr: [requests + 1]
        return real(*args, **kwargs)

    install([], decode_sizes=(), prefill_tokens=(256,), max_chunks=MAX_CHUNKS)
    triton_backend.extend_attention = recording
    try:
        engine = Engine(EngineConfig(model=str(model), **{**CPU_OPTS, "attention_backend": "triton"}))
        startup.warm_up(engine)
        assert not engine.has_unfinished()
        engine.kv.check_no_leak(engine.live_pages())
        engine.close()
    finally:
        triton_backend.extend_attention = real
    return launches


def check(name: str, root: Path) -> str:
    """NAME is an arch (mixed steps through padded passes), ARCH:prefill (prefill passes, mixed steps off),
    ARCH:burst (one prefill pass of more prompts than the padded runner's old limit of 8, a captured pass's
    default capacity) or ARCH:warmup (the start-up warm-up launches both extend orders: a captured pass's and
    that of a pass of more prompts than a captured one holds)."""
    arch, _, case = name.partition(":")
    if case == "warmup":
        uninstall()
        launches = warm_up_orders(make_tiny_model(root / f"{arch}-warmup", arch=arch))
        if ("packed", MAX_CHUNKS) not in launches or ("heavy_first", MAX_CHUNKS + 1) not in launches:
            return f"extend launches (order, requests) {launches}"
        return "ok"
    if case == "burst":
        uninstall()
        model = make_tiny_model(root / f"{arch}-burst", arch=arch)
        # 1-3 tokens each, the last one token: with mixed steps off still one prefill pass of 12 prompts
        prompts = [[3 + i, 20 + i, 40 + i][:1 + i % 3] for i in range(1, 13)]
        ref = burst(model, prompts)
        runs: list[tuple[int, int]] = []
        install(runs, decode_sizes=(), prefill_tokens=(32,), max_chunks=MAX_CHUNKS)
        got = burst(model, prompts)
        if not any(size == 12 for _, size in runs):  # (no decode graphs here: a padded run is a prefill pass)
            return f"padded runs {runs}: the 12 prompts did not run as one padded prefill pass"
        return "ok" if got == ref else f"tokens differ: {got} vs {ref}"
    model, ref = reference(arch, root)
    if case == "decode":  # batches of 1-3 requests padded to 1, 2 or 4 rows, new pages taken along the way
        steps: list[tuple[int, int]] = []
        install_decode(steps)
        got, modes, _ = run_staggered(model, started=steps.clear, **OPTS)  # the start-up's runs not counted
        # 3 requests (padded to 4) take the balanced launch the interpreter's config gives them, fewer the other
        if len(steps) != modes.count("decode") or (4, 1) not in steps or any(v for bs, v in steps if bs < 4):
            return f"padded decode runs (size, variant) {steps} for modes {modes}"
        return "ok" if got == ref else f"tokens differ: {got} vs {ref}"
    runs: list[tuple[int, int]] = []
    if case == "prefill":  # chunks of up to 5 tokens (some after a cached prefix) padded to 4 or 8 rows
        install(runs, decode_sizes=(), prefill_tokens=(4, 8))
        got, modes, _ = run_staggered(model, started=runs.clear, **OPTS)
        # every prefill pass ran padded, one of them closing with a one-token chunk (no decode graphs here:
        # the extend launch takes it as any other chunk)
        if len(runs) != modes.count("prefill") or not any(size > chunks for chunks, size in runs):
            return f"padded runs {runs} for modes {modes}"
        return "ok" if got == ref else f"tokens differ: {got} vs {ref}"
    install(runs)
    got, modes, _ = run_staggered(model, started=runs.clear, enable_mixed_chunk=True, max_mixed_tokens=BUDGET, **OPTS)
    # every mixed step ran padded (chunks, then decodes); small prefill passes may too
    if sum(size > chunks for chunks, size in runs) != modes.count("mixed") or "mixed" not in modes:
        return f"padded runs {runs} for modes {modes}"
    return "ok" if got == ref else f"tokens differ: {got} vs {ref}"


if __name__ == "__main__":
    run_cases(sys.argv[1:], check)
