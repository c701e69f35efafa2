"""What a guided request's grammar compile costs the requests already running.

A tiny random Qwen3 (written to a temporary folder with its tokenizer) on the CPU decodes --running requests
without a schema; after --warm steps a request arrives with a JSON schema of --fields object-valued fields (a
grammar that takes the compiler a while), as a server's engine loop takes it: `add_request`, then the next step.
Prints the running requests' step times (median, and the longest, which holds the arrival) and how long after its
arrival the guided request's first token came; its output must follow the schema's shape (a JSON object) when
it ends by itself.

    python benchmarks/guided_stall.py [--running 8] [--fields 200] [--warm 20]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tierlm import SamplingParams
from tierlm.config import EngineConfig
from tierlm.engine.engine import Engine
from tierlm.utils.tiny_model import make_tiny_model


def schema(fields: int) -> str:
    inner = {"type": "object", "properties": {"a": {"type": "string", "pattern": "[a-z]{3,9}"},
                                              "b": {"type": "array", "items": {"type": "integer"}},
                                              "c": {"enum": [f"x{j}" for j in range(20)]}}, "required": ["a"]}
    props = {f"f{i}": inner for i in range(fields)}
    return json.dumps({"type": "object", "properties": props, "required": ["f0"]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--running", type=int, default=8)
    ap.add_argument("--fields", type=int, default=200)
    ap.add_argument("--warm", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=120)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "m")
        engine = Engine(EngineConfig(model=str(model), device="cpu", dtype="float32", kv_cache_gb=0.05))
        free = SamplingParams(max_tokens=args.max_tokens, temperature=0, ignore_eos=True, detokenize=False)
        for i in range(args.running):
            engine.add_request(f"free{i}", [5 + i, 6, 7, 8], free)
        steps: list[float] = []
        arrival_step, arrived_at, first_token, text = -1, 0.0, None, []
        while engine.has_unfinished():
            t = time.perf_counter()
            if len(steps) == args.warm:
                arrival_step, arrived_at = len(steps), t
                engine.add_request("guided", [9, 10, 11], SamplingParams(max_tokens=args.max_tokens, temperature=0,
                                                                         json_schema=schema(args.fields)))
            for o in engine.step():
                if o.request_id == "guided":
                    if first_token is None and o.new_token_ids:
                        first_token = time.perf_counter() - arrived_at
                    text.append(o.new_text)
                    if o.finished:
                        assert o.error is None, o.error
                        reason = o.finish_reason
            steps.append((time.perf_counter() - t) * 1e3)
        engine.close()
    during = steps[:args.max_tokens]  # while the requests without a schema run
    print(" ".join(f"{s:.1f}" for s in steps[args.warm - 2:args.warm + 12]))
    print(f"running {args.running}, schema fields {args.fields}, steps {len(steps)}")
    print(f"step ms: median {statistics.median(during):.2f}, the arrival's step {steps[arrival_step]:.2f}, "
          f"longest {max(during):.2f}")
    print(f"guided: first token {first_token * 1e3:.1f} ms after arrival, finish {reason}, "
          f"{len(''.join(text))} characters")
    if reason == "stop":
        assert isinstance(json.loads("".join(text)), dict)


if __name__ == "__main__":
    main()
