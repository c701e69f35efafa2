"""`tierlm serve`: the OpenAI-compatible HTTP server (flags are the `EngineConfig` fields, grouped)."""
from __future__ import annotations

import argparse

from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.cli.errors import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="Serve a model over an OpenAI-compatible HTTP API.",
                       description="Serve a model over HTTP: /v1/completions, /v1/chat/completions (SSE streaming), "
                                   "/v1/models, native /generate on token ids, /health, /metrics, /stats. Binds "
                                   "127.0.0.1 unless --host says otherwise.")
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
