"""Streamed completions one after another, timed by a client that is not `tierlm bench serve`: the standard
library's blocking `http.client`, or curl (`--client curl`, its own HTTP stack, read line by line from a pipe).

A check of the serving benchmark's figures with another client at concurrency 1: each request sends a random
prompt of token ids to /v1/completions (`ignore_eos`, `stream_options.include_usage`); a `data:` event with a choice
is one arrival. TTFT is the first arrival after the request was sent, TPOT (time after the first
token over the usage's completion tokens minus one) and the longest gap between arrivals per request; medians
over the requests, printed as one line (`--json` for every request).

Usage: `python benchmarks/sse_client.py --base-url http://127.0.0.1:8000 --num-prompts 5 --input-len 128
--output-len 512 [--client curl] [--json]`.
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import subprocess
import time
import urllib.parse
from typing import Iterator


def stdlib_lines(url: str, body: bytes) -> Iterator[bytes]:
    """The response's lines through `http.client` (chunked transfer decoded by the library)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    try:
        conn.request("POST", parts.path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status}: {resp.read()[:300]!r}")
        while line := resp.readline():
            yield line
    finally:
        conn.close()


def curl_lines(url: str, body: bytes) -> Iterator[bytes]:
    """The response's lines as curl writes them, unbuffered (`-N`); a non-2xx status fails the request."""
    proc = subprocess.Popen(["curl", "-sS", "-N", "--fail-with-body", "-H", "Content-Type: application/json",
                             "--data-binary", "@-", url], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(body)
    proc.stdin.close()
    try:
        while line := proc.stdout.readline():
            yield line
    finally:
        if proc.wait() != 0:
            raise SystemExit(f"curl exited with {proc.returncode}")


def one_request(lines_of, url: str, model: str, prompt: list[int], output_len: int) -> dict:
    """Send one streamed request; the arrival times of its token events and the usage's token count."""
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": output_len, "temperature": 0,
                       "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}).encode()
    t0 = time.perf_counter()
    arrivals: list[float] = []
    tokens = 0
    for raw in lines_of(url, body):
        line = raw.strip()
        if not line.startswith(b"data:") or line == b"data: [DONE]":
            continue
        event = json.loads(line[5:])
        if event.get("usage"):
            tokens = int(event["usage"]["completion_tokens"])
        if event.get("choices"):  # a server without a tokenizer sends empty text: one event per output
            arrivals.append(time.perf_counter())
    if len(arrivals) < 2:
        raise SystemExit(f"only {len(arrivals)} token events came back")
    tokens = tokens or len(arrivals)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return {"ttft_ms": (arrivals[0] - t0) * 1e3, "tpot_ms": (arrivals[-1] - arrivals[0]) * 1e3 / (tokens - 1),
            "itl_max_ms": max(gaps) * 1e3, "events": len(arrivals), "tokens": tokens}


def served_model(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", "/v1/models")
    return json.loads(conn.getresponse().read())["data"][0]["id"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--client", choices=("stdlib", "curl"), default="stdlib")
    p.add_argument("--num-prompts", type=int, default=5)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=512)
    p.add_argument("--vocab-size", type=int, default=10000, help="prompt ids are drawn from [0, N)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print every request's figures as JSON")
    args = p.parse_args()
    if args.output_len < 2:
        p.error("--output-len must be at least 2 (TPOT needs two tokens)")
    rng = random.Random(args.seed)
    model = served_model(args.base_url)
    lines_of = curl_lines if args.client == "curl" else stdlib_lines
    url = args.base_url.rstrip("/") + "/v1/completions"
    rows = [one_request(lines_of, url, model, [rng.randrange(args.vocab_size) for _ in range(args.input_len)],
                        args.output_len) for _ in range(args.num_prompts)]
    if args.json:
        print(json.dumps({"client": args.client, "requests": rows}))
        return
    per_request = ", ".join(f"{r['tpot_ms']:.3f}" for r in rows)
    med = {k: statistics.median(r[k] for r in rows) for k in ("ttft_ms", "tpot_ms", "itl_max_ms")}
    print(f"{args.client} client, {len(rows)} requests one at a time: TTFT p50 {med['ttft_ms']:.2f} ms, "
          f"TPOT p50 {med['tpot_ms']:.3f} ms (per request: {per_request}), "
          f"longest gap p50 {med['itl_max_ms']:.2f} ms, {rows[0]['events']} events for {rows[0]['tokens']} tokens")


if __name__ == "__main__":
    main()
