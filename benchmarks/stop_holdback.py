"""What a stop string costs a stream: greedy streamed completions, each sent twice, without and with `--stop`
(a string the answer should not hold), compared event by event. For each request: the tokens and milliseconds
until the first text shows with the stop string against without it, and how many characters the stream with it
is behind the one without at the same token count (mean over events; 0 where nothing is kept back needlessly).

Usage: python benchmarks/stop_holdback.py --base-url http://127.0.0.1:8000 [--stop '<|im_end|>']
[--num-prompts 8] [--output-len 32]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Optional

from sse_client import served_model, stdlib_lines  # a sibling module: this directory is first on the path of a script


def stream(url: str, model: str, prompt: str, stop: list[str], max_tokens: int) -> list[tuple[int, str, float]]:
    """(tokens so far, text so far, ms since the request) after each event with a choice."""
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stop": stop,
                       "logprobs": 1, "ignore_eos": True, "stream": True}).encode()
    events, tokens, text, t0 = [], 0, "", time.perf_counter()
    for line in stdlib_lines(url + "/v1/completions", body):
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        for choice in json.loads(line[6:]).get("choices", []):
            text += choice["text"]
            tokens += len((choice.get("logprobs") or {}).get("tokens") or [])
            events.append((tokens, text, (time.perf_counter() - t0) * 1e3))
    return events


def first_text(events: list[tuple[int, str, float]]) -> tuple[int, float]:
    """(tokens, ms) at the first event with any text; (-1, nan) where none had any."""
    return next(((n, ms) for n, text, ms in events if text), (-1, float("nan")))


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default="", help="The served model's name (default: the first of /v1/models).")
    ap.add_argument("--stop", default="<|im_end|>")
    ap.add_argument("--num-prompts", type=int, default=8)
    ap.add_argument("--output-len", type=int, default=32)
    args = ap.parse_args(argv)
    model = args.model or served_model(args.base_url)
    rows = []
    for i in range(args.num_prompts):
        prompt = f"Request {i}: the quick brown fox jumps over the lazy dog and then"
        plain = stream(args.base_url, model, prompt, [], args.output_len)
        held = stream(args.base_url, model, prompt, [args.stop], args.output_len)
        if held[-1][1] != plain[-1][1]:
            print(f"request {i}: the answers differ (the stop string occurs?): skipped")
            continue
        shown = {n: text for n, text, _ in plain}
        behind = [len(shown[n]) - len(text) for n, text, _ in held if n in shown]
        rows.append((*first_text(plain), *first_text(held), statistics.mean(behind) if behind else float("nan")))
    if not rows:
        raise SystemExit("no request to compare")
    med = [statistics.median(col) for col in zip(*rows)]
    print(f"stop {args.stop!r}, {len(rows)} requests of {args.output_len} tokens, medians: first text after "
          f"{med[0]:.0f} tokens / {med[1]:.1f} ms without it, {med[2]:.0f} / {med[3]:.1f} ms with it; "
          f"{med[4]:.2f} characters behind")


if __name__ == "__main__":
    main()
