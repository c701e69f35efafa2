"""`tierlm serve`: the OpenAI-compatible HTTP server (flags are the `EngineConfig` fields, grouped)."""
from __future__ import annotations

import argparse

from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.cli.errors import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="Serve a model over an OpenAI-compatible HTTP API.",
                       description="Serve a model over HTTP: /v1/completions, /v1/chat/completions (SSE streaming), "
                                   "/v1/models, native /generate on token ids, /health, /metrics, /stats. Binds "
                                   "127.0.0.1 unless --host says otherwise.",
                       epilog="Exit status: 0 after SIGTERM (130 after Ctrl-C); 1 when the engine process or one "
                              "of its tensor-parallel ranks died while serving, when a step ran longer than "
                              "--watchdog-timeout, or, on a node started with --node-rank K > 0, when node 0's "
                              "engine is gone (restart it); 2 for a bad flag or "
                              "a failed start (the message names the cause).")
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tierlm.server.launch import ServerStartError, serve

    config = config_from_args(args)
    if config.node_rank > 0:  # another node of a multi-node engine: run its ranks, serve nothing
        from tierlm.engine.rank_launch import run_node

        return run_node(config)
    try:
        return serve(config, log_level=getattr(args, "log_level", "info"))
    except ServerStartError as e:
        raise CLIError(str(e)) from None
