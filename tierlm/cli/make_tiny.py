"""`tierlm make-tiny-model DIR`: write a tiny random checkpoint with a real tokenizer."""
from __future__ import annotations

import argparse

from tierlm.cli.errors import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    from tierlm.utils.tiny_model import ARCHS

    p = sub.add_parser("make-tiny-model", help="Write a tiny random model (weights + tokenizer) for trying TierLM.",
                       description="Write a tiny random Llama/Qwen2/Qwen3/Qwen3-MoE/DeepSeek-V2/DeepSeek-V3 "
                                   "checkpoint and a byte-level BPE tokenizer (with a chat template) to DIR. Loads "
                                   "in TierLM and transformers.")
    p.add_argument("dir", help="Output directory (created if missing).")
    p.add_argument("--arch", default="qwen3", choices=ARCHS, help="Architecture (default: qwen3).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the random weights (default: 0).")
    p.add_argument("--num-shards", type=int, default=1, help="Write sharded safetensors with an index (default: 1).")
    p.add_argument("--force", action="store_true", help="Write into DIR even if it is not empty (replacing its "
                                                        "weights, config and tokenizer files).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tierlm.utils.tiny_model import DirectoryNotEmptyError, make_tiny_model

    out = Path(args.dir)
    if out.exists() and not out.is_dir():
        raise CLIError(f"DIR {args.dir!r} exists and is not a directory")
    if args.num_shards < 1:
        raise CLIError(f"--num-shards must be >= 1, got {args.num_shards}")
    try:
        make_tiny_model(out, arch=args.arch, seed=args.seed, num_shards=args.num_shards, overwrite=args.force)
    except DirectoryNotEmptyError:
        raise CLIError(f"DIR {args.dir!r} is not empty; pass --force to overwrite the model in it") from None
    except OSError as e:
        raise CLIError(f"DIR {args.dir!r}: cannot write {e.filename or args.dir}: {e.strerror or e}") from None
    print(f"wrote a tiny {args.arch} model to {out}")
    return 0
