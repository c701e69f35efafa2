"""`tierlm bench serve`: online serving under load, against any OpenAI-compatible server.

Requests arrive as a Poisson process at --request-rate (or all at once: inf), at most --max-concurrency in
flight, and stream their answers. Reports request throughput, output tok/s, TTFT / TPOT / inter-token
latency (mean, p50, p90, p99) and goodput under --slo-ttft-ms / --slo-tpot-ms; --json writes the report
with one row per request, --plot a PNG of latency against time. Prompts are token ids (the server may run
with --skip-tokenizer-init), or text with --tokenizer. A first request checks the server before the run.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

from tierlm.cli.errors import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="Online serving: request rates, TTFT/TPOT/ITL percentiles, goodput.",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_argument_group("server options")
    s.add_argument("--base-url", default="http://127.0.0.1:8000", help="Server URL (default: %(default)s).")
    s.add_argument("--endpoint", default="/v1/completions", choices=("/v1/completions", "/v1/chat/completions"),
                   help="API to call (default: %(default)s; chat needs text prompts, i.e. --tokenizer).")
    s.add_argument("--model", help="Model name sent in requests (default: the first of GET /v1/models).")
    s.add_argument("--api-key", help="Sent as 'Authorization: Bearer KEY'.")
    s.add_argument("--request-timeout", type=float, default=3600.0,
                   help="Seconds one request may take (default: %(default)s).")
    w = p.add_argument_group("workload options")
    w.add_argument("--dataset-name", default="random", choices=("random", "sharegpt"),
                   help="random token ids, or ShareGPT-style conversations from --dataset-path (default: random).")
    w.add_argument("--dataset-path", help="JSON file of ShareGPT-style conversations.")
    w.add_argument("--num-prompts", type=int, default=1000, help="Requests to send (default: %(default)s).")
    w.add_argument("--random-input-len", type=int, default=1024, help="Prompt tokens (default: %(default)s).")
    w.add_argument("--random-output-len", type=int, default=128, help="Output tokens (default: %(default)s).")
    w.add_argument("--random-range-ratio", type=float, default=0.0,
                   help="Lengths uniform in [L*(1-r), L*(1+r)] (default: 0, every request exactly L).")
    w.add_argument("--random-vocab-size", type=int, default=10_000,
                   help="Random token ids are drawn from [0, N) (default: %(default)s; lower it for tiny models).")
    w.add_argument("--sharegpt-output-len", type=int,
                   help="Output tokens of every ShareGPT request (default: the recorded reply's length).")
    w.add_argument("--tokenizer", help="Tokenizer directory or hub id: prompts go as text instead of token ids.")
    w.add_argument("--seed", type=int, default=0, help="Seed of the prompts and arrivals (default: 0).")
    w.add_argument("--request-rate", type=float, default=float("inf"),
                   help="Requests per second, Poisson arrivals; inf sends all at once (default: inf).")
    w.add_argument("--max-concurrency", type=int, help="Most requests in flight (default: no limit).")
    w.add_argument("--temperature", type=float, default=0.0, help="Sampling temperature (default: 0).")
    w.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
                   help="Ask for exactly the output length (vLLM/SGLang/TierLM's ignore_eos; default: on).")
    o = p.add_argument_group("report options")
    o.add_argument("--slo-ttft-ms", type=float, help="Goodput: a request must get its first token within this.")
    o.add_argument("--slo-tpot-ms", type=float, help="Goodput: a request's time per output token at most this.")
    o.add_argument("--json", metavar="PATH", help="Write the report (and one row per request) as JSON here.")
    o.add_argument("--plot", metavar="PATH", help="Write a PNG of TTFT and TPOT against time here.")
    o.add_argument("--label", default="", help="Free text stored in the report (e.g. the server's flags).")
    o.add_argument("--disable-tqdm", action="store_true", help="No progress bar.")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> str:
    """Validate the flags that need no work; return the base URL without a trailing slash."""
    from urllib.parse import urlparse

    url = urlparse(args.base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise CLIError(f"--base-url {args.base_url!r}: expected an http:// or https:// URL with a host")
    try:
        url.port  # noqa: B018  (raises for a port out of range)
    except ValueError as e:
        raise CLIError(f"--base-url {args.base_url!r}: {e}") from None
    if not args.request_rate > 0:
        raise CLIError(f"--request-rate must be > 0 (or inf), got {args.request_rate}")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise CLIError(f"--max-concurrency must be >= 1, got {args.max_concurrency}")
    if args.request_timeout <= 0:
        raise CLIError(f"--request-timeout must be > 0, got {args.request_timeout}")
    for flag in ("slo_ttft_ms", "slo_tpot_ms"):
        if getattr(args, flag) is not None and not getattr(args, flag) > 0:
            raise CLIError(f"--{flag.replace('_', '-')} must be > 0")
    if args.dataset_name == "sharegpt" and not args.dataset_path:
        raise CLIError("--dataset-name sharegpt needs --dataset-path")
    if args.endpoint == "/v1/chat/completions" and args.tokenizer is None:
        raise CLIError("--endpoint /v1/chat/completions sends text: give --tokenizer")
    for flag in ("json", "plot"):  # refused before the run rather than after it
        path = getattr(args, flag)
        if path is not None and (Path(path).is_dir() or not Path(path).parent.is_dir()):
            raise CLIError(f"--{flag} {path!r}: not a file in an existing directory")
    return args.base_url.rstrip("/")


def _workload(args: argparse.Namespace) -> tuple[list, Any]:
    from tierlm.cli.bench.serve_data import random_requests, sharegpt_requests

    tokenizer = None
    if args.tokenizer:
        from tierlm.engine.errors import ModelLoadError
        from tierlm.engine.tokenizer import load_tokenizer

        try:
            tokenizer = load_tokenizer(args.tokenizer)
        except ModelLoadError as e:
            raise CLIError(f"--tokenizer: {e}") from None
    if args.dataset_name == "sharegpt":
        return sharegpt_requests(args.dataset_path, args.num_prompts, args.seed, tokenizer,
                                 args.sharegpt_output_len), tokenizer
    return random_requests(args.num_prompts, args.random_input_len, args.random_output_len,
                           args.random_range_ratio, args.seed, tokenizer, args.random_vocab_size), tokenizer


async def _bench(args: argparse.Namespace, base_url: str, reqs: list) -> dict[str, Any]:
    import aiohttp
    from tqdm.auto import tqdm

    from tierlm.cli.bench import serve_client as client
    from tierlm.cli.bench.serve_metrics import per_request, summarize

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        model = args.model or await client.served_model(session, base_url, headers)
        target = client.Target(base_url + args.endpoint, args.endpoint, model, headers, args.temperature,
                               args.ignore_eos)
        probe = await client.send(session, target, reqs[0], 0.0, max_tokens=min(reqs[0].output_len, 4))
        if not probe.ok:
            raise CLIError(f"the first request to {target.url} failed: {probe.error}")
        bar = tqdm(total=len(reqs), desc="bench serve", unit="req", disable=args.disable_tqdm)
        results, duration = await client.run_load(session, target, reqs, args.request_rate, args.max_concurrency,
                                                  args.seed, lambda: bar.update(1))
        bar.close()
    if not any(r.ok for r in results):
        raise CLIError(f"all {len(results)} requests failed, e.g. {results[0].error}")
    return {"label": args.label,
            "config": {"base_url": base_url, "endpoint": args.endpoint, "model": model,
                       "dataset": args.dataset_name, "num_prompts": len(reqs),
                       "request_rate": "inf" if math.isinf(args.request_rate) else args.request_rate,
                       "max_concurrency": args.max_concurrency, "seed": args.seed,
                       "text_prompts": args.tokenizer is not None, "ignore_eos": args.ignore_eos},
            "summary": summarize(results, duration, args.slo_ttft_ms, args.slo_tpot_ms),
            "requests": per_request(results)}


def _write_json(path: Optional[str], report: dict[str, Any]) -> None:
    if path is None:
        return
    try:
        Path(path).write_text(json.dumps(report, indent=2, allow_nan=False))
    except OSError as e:
        raise CLIError(f"--json {path!r}: cannot write: {e.strerror or e}") from None


def run(args: argparse.Namespace) -> int:
    import asyncio

    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise CLIError("tierlm bench serve needs aiohttp (pip install aiohttp)") from None
    from tierlm.cli.bench.serve_metrics import format_table, plot

    base_url = _check(args)
    reqs, _ = _workload(args)
    report = asyncio.run(_bench(args, base_url, reqs))
    _write_json(args.json, report)
    print(format_table(report))
    if args.plot:
        title = f"{report['config']['model']} at {args.request_rate} req/s {args.label}".strip()
        try:
            drawn = plot(report["requests"], Path(args.plot), title)
        except OSError as e:
            raise CLIError(f"--plot {args.plot!r}: cannot write: {e.strerror or e}") from None
        if not drawn:
            print(f"--plot: matplotlib is not installed (pip install matplotlib); {args.plot} not written",
                  file=sys.stderr)
    return 0
