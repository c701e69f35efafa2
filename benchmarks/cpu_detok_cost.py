"""What streaming text costs the host per token as an answer grows (CPU, no GPU needed).

`IncrementalDetokenizer` runs for every running request that streams text, every decode step, on the step's
path. A tiny model's tokenizer (written to a temporary folder) streams a long English and accented text token by
token, with and without a stop string; the microseconds per token are printed at several answer lengths, so a
cost that grows with the answer (text copied on every token) shows.

    PYTHONPATH=. python benchmarks/cpu_detok_cost.py [--rounds 12]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from transformers import AutoTokenizer

from tierlm.engine.detokenizer import IncrementalDetokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12, help="passes over the text (each about 4,400 tokens)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as model:
        subprocess.run([sys.executable, "-m", "tierlm", "make-tiny-model", model, "--force"], check=True,
                       capture_output=True)
        tok = AutoTokenizer.from_pretrained(model)
    ids = tok.encode("the quick brown fox jumps over the lazy dog, héllo wörld. " * 200)
    print(f"{'stop':>6} {'tokens so far':>14} {'us per token':>13}")
    for stop in ([], ["STOP"]):
        detok, seen = IncrementalDetokenizer(tok, ids[:5], stop, True), 0
        for rnd in range(args.rounds):
            start = time.perf_counter()
            for t in ids:
                detok.add(t)
                detok.delta(final=False)
            seen += len(ids)
            if rnd in (0, args.rounds // 4, args.rounds // 2, args.rounds - 1):
                print(f"{bool(stop)!s:>6} {seen:14d} {(time.perf_counter() - start) / len(ids) * 1e6:13.2f}")


if __name__ == "__main__":
    main()
