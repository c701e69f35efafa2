"""Mixed steps through the Triton backends (per-head and latent), engine end to end.

`python -m tests.engine.mixed_cases ARCH...` prints a JSON map arch -> "ok" or the failure; run under
TRITON_INTERPRET=1 without a GPU (see tests/kernels/interp.py). In a mixed step the decode requests go
through the decode kernel after the prefill chunks (the extend kernel per-head, the torch extend path for
latents), so this checks that those passes give the pure decode steps' greedy tokens.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Callable

from tests.engine.test_mixed_batches import PROMPTS, run_staggered
from tierlm.sampling_params import SamplingParams
from tierlm.utils.tiny_model import make_tiny_model


def check(arch: str, root: Path) -> str:
    model = make_tiny_model(root / arch, arch=arch)
    # a shared prefix (the second prompt hits the first's pages) and chunks: the interpreter is slow
    opts = dict(attention_backend="triton", every=2, prompts=PROMPTS[:3], rounds=1,
                params=SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, detokenize=False))
    ref, _, _ = run_staggered(model, **opts)
    got, modes, _ = run_staggered(model, enable_mixed_chunk=True, max_mixed_tokens=7, **opts)
    if "mixed" not in modes:
        return "no mixed step was scheduled"
    return "ok" if got == ref else f"tokens differ: {got} vs {ref}"


def main(archs: list[str], check: Callable[[str, Path], str] = check) -> None:
    """Run `check` per arch and print the JSON map of results (every failure reported, none raised)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            try:
                results[arch] = check(arch, Path(tmp))
            except Exception as e:  # noqa: BLE001  (reported to the parent test)
                results[arch] = f"{type(e).__name__}: {e}"
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
