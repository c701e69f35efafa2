"""Structured outputs on a device: outputs follow their schema, and what guided requests cost a batch.

A tiny random Qwen3 (written to a temporary folder, with its tokenizer: structured outputs need one) decodes N
requests three ways in one engine: none guided, half guided by a small JSON schema, all guided; the guided outputs
that end by themselves must parse and follow the schema (one cut at --max-tokens is counted apart), and the free
requests' tokens must not change when guided ones run beside them.
Guided requests end when their JSON is complete, so the runs count output tokens per second of wall time.
Prints a short table; exits 1 on an output that does not follow its schema.

    python benchmarks/guided_check.py [--requests 64] [--max-tokens 128]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from tierlm import LLM, SamplingParams
from tierlm.utils.tiny_model import make_tiny_model

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green", "blue"]},
                                           "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 4}},
          "required": ["ok", "color", "tags"], "additionalProperties": False}


def follows(text: str) -> bool:
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    return (set(doc) == {"ok", "color", "tags"} and isinstance(doc["ok"], bool) and doc["color"] in SCHEMA[
        "properties"]["color"]["enum"] and all(t in ("a", "b") for t in doc["tags"]) and len(doc["tags"]) <= 4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "tiny", arch="qwen3")
        llm = LLM(str(model), device=args.device, **({"dtype": "float32", "kv_cache_gb": 0.05}
                                                     if args.device == "cpu" else {}))
        prompts = [f"request {i}: the quick brown fox" for i in range(args.requests)]
        free = SamplingParams(max_tokens=args.max_tokens, temperature=0, ignore_eos=True)
        guided = SamplingParams(max_tokens=args.max_tokens, temperature=0, json_schema=json.dumps(SCHEMA))
        runs, rows = {}, []
        for name, plist in (("none guided", [free] * args.requests),
                            ("half guided", [guided if i % 2 else free for i in range(args.requests)]),
                            ("all guided", [guided] * args.requests), ("none guided again", [free] * args.requests)):
            llm.generate(prompts[:2], plist[:2])  # this mix's first launches, outside the timing
            t = time.perf_counter()
            outs = llm.generate(prompts, plist)
            wall = time.perf_counter() - t
            runs[name] = outs
            tokens = sum(len(o.token_ids) for o in outs)
            ended = [o for o, p in zip(outs, plist) if p.json_schema and o.finish_reason != "length"]
            cut = sum(1 for o, p in zip(outs, plist) if p.json_schema and o.finish_reason == "length")
            bad = sum(not follows(o.text) for o in ended)
            rows.append((name, tokens, wall, tokens / wall, f"{bad} of {len(ended)} ({cut} cut)"))
        llm.close()
    kept = all(a.token_ids == b.token_ids for i, (a, b) in enumerate(zip(runs["none guided"], runs["half guided"]))
               if i % 2 == 0)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device {device}, {args.requests} requests, at most {args.max_tokens} tokens each; free requests beside "
          f"guided ones unchanged: {kept}")
    print("| run | output tokens | wall s | tok/s | guided outputs that ended, not following the schema |")
    print("|---|---|---|---|---|")
    for name, tokens, wall, rate, bad in rows:
        print(f"| {name} | {tokens} | {wall:.3f} | {rate:,.0f} | {bad} |")
    ok = kept and all(bad.startswith("0 of") for *_, bad in rows)
    print("ok" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
