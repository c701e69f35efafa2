"""Time to first token of a fresh server's first requests, against the requests after them.

Starts `python -m tierlm serve` anew for each run (from `--code`'s tree, so two checkouts compare on one
machine), waits for /health, then sends one streamed request at a time through the standard library's
`http.client`: completion, completion, chat, chat, each a new short prompt, 4 tokens out. A first request slower
than the second of its kind pays for something start-up left undone. Prints one line per request position: the
median and the spread of its TTFT over the runs.

    python benchmarks/first_request_serve.py --model MODEL_DIR [--runs 5] [--code .] [-- SERVE FLAGS...]
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Iterator, Optional

from sse_client import served_model  # a sibling module: this directory is first on the path of a script

SEQUENCE = ("completion", "completion", "chat", "chat")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited during start-up (status {proc.returncode})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready after {limit_s:.0f} s")


def ttft_ms(port: int, kind: str, model: str, n: int, ids: Optional[list[int]] = None) -> float:
    """Milliseconds from sending one streamed request to its first `data:` event (a completion of token `ids`
    where given: a server without a tokenizer)."""
    text = f"request {n} says hello"
    body = {"model": model, "max_tokens": 4, "stream": True, "ignore_eos": True}
    if kind == "chat":
        path, body["messages"] = "/v1/chat/completions", [{"role": "user", "content": text}]
    else:
        path, body["prompt"] = "/v1/completions", text if ids is None else ids
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        t0 = time.perf_counter()
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise SystemExit(f"{path}: HTTP {resp.status}: {resp.read()[:300]!r}")
        first = None
        while line := resp.readline():
            if first is None and line.startswith(b"data:"):
                first = time.perf_counter()
        return ((first or time.perf_counter()) - t0) * 1e3
    finally:
        conn.close()


@contextlib.contextmanager
def serving(args: argparse.Namespace, serve_flags: list[str]) -> Iterator[tuple[int, str]]:
    """A fresh `tierlm serve` from `args.code`'s tree on a free port, ready: yields (port, served model name) and
    stops the server's whole process group after."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.path.abspath(args.code)}
    cmd = [sys.executable, "-m", "tierlm", "serve", "--model", args.model, "--port", str(port), *serve_flags]
    with open(os.devnull, "w") as sink:
        # `-m` puts the working directory first on the path: run in the tree itself
        proc = subprocess.Popen(cmd, env=env, cwd=args.code, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_ready(port, proc, args.start_timeout)
        yield port, served_model(f"http://127.0.0.1:{port}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def one_run(args: argparse.Namespace, serve_flags: list[str]) -> list[float]:
    with serving(args, serve_flags) as (port, model):
        return [ttft_ms(port, kind, model, i) for i, kind in enumerate(SEQUENCE)]


def main() -> None:
    argv = sys.argv[1:]
    serve_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True,
                    help="model directory (absolute, or relative to --code) or builtin: name")
    ap.add_argument("--runs", type=int, default=5, help="fresh servers, one after another")
    ap.add_argument("--code", default=".", help="the source tree to run the server from")
    ap.add_argument("--start-timeout", type=float, default=600.0)
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    runs = [one_run(args, serve_flags) for _ in range(args.runs)]
    print(f"code {args.code}, {args.runs} fresh servers; TTFT ms: median (min-max)")
    for i, kind in enumerate(SEQUENCE):
        col = [r[i] for r in runs]
        print(f"{i + 1}. {kind:10s} {statistics.median(col):7.1f} ({min(col):.1f}-{max(col):.1f})")


if __name__ == "__main__":
    main()
