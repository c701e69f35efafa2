"""`tierlm cache gc` and `tierlm cache clear`: the two commands that delete, and what they tell the operator.

Both ask before deleting (without a terminal they refuse unless ``--yes``) and report the space they
actually freed, which is less than the total when a running process holds some entries.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List

from tierlm.cachedir import SUBSYSTEMS, CacheRoot, collect_garbage, format_bytes
from tierlm.cachedir.budget import BUDGET_VAR, budget_from_env, parse_budget
from tierlm.cachedir.fsutil import tree_size
from tierlm.cachedir.gc import clear_subsystem
from tierlm.cli.errors import CLIError

# What lives in the directories that gc counts but does not split into entries.
OWNERS: Dict[str, str] = {
    "triton": "Triton's kernel cache",
    "inductor": "torch.compile's cache (Inductor)",
    "cuda": "the CUDA driver's JIT cache",
    "flashinfer": "FlashInfer's workspace",
    "deep_gemm": "DeepGEMM's JIT cache",
    "kv": "TierLM's L3 KV store, segment files of pages, kept within --kv-store-max-gb by the engine",
    "jit": "tvm-ffi's own builds and builds in progress",
}


def confirm(question: str) -> bool:
    """Ask `question` on the terminal; without one, refuse (CLIError) and point at --yes."""
    if not sys.stdin or not sys.stdin.isatty():
        raise CLIError(f"refusing to {question} without confirmation: stdin is not a terminal; pass --yes")
    answer = input(f"{question}? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _budget(args: argparse.Namespace) -> int:
    try:
        if args.max_size:
            return parse_budget(args.max_size)
        budget = budget_from_env()
    except ValueError as e:
        raise CLIError(str(e)) from None
    if budget is None:
        raise CLIError(f"no budget: pass --max-size (e.g. 20G) or set {BUDGET_VAR} (GiB)")
    return budget


def _unmanaged_note(by: Dict[str, int]) -> str:
    parts = [f"{s} {format_bytes(n)} ({OWNERS.get(s, 'not split into entries')})"
             for s, n in sorted(by.items(), key=lambda kv: -kv[1])]
    return "; ".join(parts)


def cmd_gc(args: argparse.Namespace, root: CacheRoot) -> int:
    """`cache gc`: evict LRU entries down to --max-size or TIERLM_CACHE_MAX_GB, after confirming."""
    budget = _budget(args)
    if root.write_base is None:
        raise CLIError(f"the cache root {root.path} is read-only and has no overlay; nothing to collect")
    report = collect_garbage(root, budget, dry_run=True)
    if not args.dry_run:
        planned = sum(size for _, size in report.removed)
        if report.removed and not args.yes and not confirm(
                f"remove {len(report.removed)} item(s) ({format_bytes(planned)}) from {root.write_base} "
                f"to fit {format_bytes(budget)}"):
            print("nothing removed")
            return 1
        report = collect_garbage(root, budget)
    verb = "would remove" if args.dry_run else "removed"
    for path, size in report.removed:
        print(f"{verb} {path}  ({format_bytes(size)})")
    for path in report.kept_in_use:
        print(f"kept {path}  (in use by a running process)")
    freed = sum(size for _, size in report.removed)
    print(f"{verb} {len(report.removed)} item(s), {format_bytes(freed)}; "
          f"usage {format_bytes(report.before)} -> {format_bytes(report.after)} (budget {format_bytes(budget)})")
    if report.over_budget:
        if report.unmanaged_by:
            print(f"still over budget: {format_bytes(report.unmanaged)} is in trees gc does not split: "
                  f"{_unmanaged_note(report.unmanaged_by)}; `tierlm cache clear SUBSYS` empties one")
        else:
            print("still over budget: the remaining entries are in use")
    return 0


def cmd_clear(args: argparse.Namespace, root: CacheRoot) -> int:
    """`cache clear [SUBSYS]`: delete (asks unless --yes); entries in use by a live process are kept."""
    if root.write_base is None:
        raise CLIError(f"the cache root {root.path} is read-only; nothing can be cleared")
    if args.subsystem and not root.writable(args.subsystem):
        raise CLIError(f"{root.subsystem_dir(args.subsystem)} is read-only; nothing can be cleared")
    targets: List[str] = [args.subsystem] if args.subsystem else [s for s in SUBSYSTEMS if root.writable(s)]

    def usage() -> int:
        return sum(tree_size(root.subsystem_dir(s)) for s in targets)
    before = usage()
    what = f"{args.subsystem} cache" if args.subsystem else "the whole cache"
    where = root.subsystem_dir(args.subsystem) if args.subsystem else root.write_base
    if not args.yes and not confirm(f"delete {what} ({format_bytes(before)}) in {where}"):
        print("nothing deleted")
        return 1
    try:
        kept = sum(clear_subsystem(root, s) for s in targets)
    except OSError as e:
        raise CLIError(f"cannot clear {e.filename}: {e.strerror}") from None
    left = usage()
    line = f"cleared {what}: freed {format_bytes(max(0, before - left))}"
    if kept:
        line += f"; kept {kept} entr{'y' if kept == 1 else 'ies'} in use ({format_bytes(left)})"
    print(line)
    return 0
