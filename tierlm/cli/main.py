"""Entry point of the `tierlm` command: dispatches to one module per subcommand."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

import tierlm  # noqa: F401  (wires the cache root before any subcommand imports torch)
from tierlm.cli.errors import CLIError
from tierlm.utils.process import stacks_on_sigusr1

# (subcommand module, one-line help); each module defines `register(subparsers)`.
SUBCOMMANDS = (
    ("tierlm.cli.serve", "serve"),
    ("tierlm.cli.generate", "generate"),
    ("tierlm.cli.bench", "bench"),
    ("tierlm.cli.cache", "cache"),
    ("tierlm.cli.make_tiny", "make-tiny-model"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierlm", description="TierLM: LLM serving with tiered KV caches.")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="Logging verbosity.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, _ in SUBCOMMANDS:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stacks_on_sigusr1()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"tierlm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly, like other command-line tools
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
