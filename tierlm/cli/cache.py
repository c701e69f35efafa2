"""`tierlm cache`: inspect and maintain the compile-cache root (path, ls, du, gc, verify, clear, export,
import, promote). Never imports torch."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import List, Sequence

from tierlm.cachedir import (SUBSYSTEMS, AutotuneStore, BundleError, CacheRoot, collect_garbage, export_bundles,
                             format_bytes, import_bundles, iter_entries, parse_size, resolve_root, verify_root)
from tierlm.cachedir.fsutil import tree_size
from tierlm.cachedir.gc import clear_subsystem
from tierlm.cachedir.inventory import ENTRY_SUBSYSTEMS, UNSEALED_FORMAT
from tierlm.cachedir.lease import in_use
from tierlm.cachedir.root import THIRD_PARTY_VARS, user_set_vars
from tierlm.cli.errors import CLIError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `cache` command and its sub-commands."""
    p = subparsers.add_parser("cache", help="Inspect and maintain the compile-cache root.",
                              description="Inspect and maintain the compile-cache root "
                                          "(TIERLM_CACHE_DIR, else $XDG_CACHE_HOME/tierlm, else ~/.cache/tierlm).")
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    p.set_defaults(func=lambda args: _usage(p))

    s = sub.add_parser("path", help="Print the root, or one subsystem's directory, and which setting chose it.")
    s.add_argument("subsystem", nargs="?", choices=SUBSYSTEMS, metavar="SUBSYS",
                   help=f"one of: {', '.join(SUBSYSTEMS)}")
    s.set_defaults(func=cmd_path)

    s = sub.add_parser("ls", help="List entries and AOT bundles.")
    s.add_argument("subsystem", nargs="?", choices=ENTRY_SUBSYSTEMS, metavar="SUBSYS")
    s.set_defaults(func=cmd_ls)

    s = sub.add_parser("du", help="Disk usage per subsystem.")
    s.set_defaults(func=cmd_du)

    s = sub.add_parser("gc", help="Evict least-recently-used entries until the root fits the budget.")
    s.add_argument("--max-size", help="budget, e.g. 20G or 500M (default: TIERLM_CACHE_MAX_GB)")
    s.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    s.set_defaults(func=cmd_gc)

    s = sub.add_parser("verify", help="Re-hash every entry; quarantine corrupted ones (rebuilt on next use).")
    s.add_argument("subsystem", nargs="?", choices=ENTRY_SUBSYSTEMS, metavar="SUBSYS")
    s.add_argument("--no-fix", action="store_true", help="report only, do not quarantine")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("clear", help="Delete a subsystem's cache, or everything (asks first).")
    s.add_argument("subsystem", nargs="?", choices=SUBSYSTEMS, metavar="SUBSYS")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    s.set_defaults(func=cmd_clear)

    s = sub.add_parser("export", help="Write sealed AOT bundles to a .tar.gz.")
    s.add_argument("-o", "--output", required=True, help="archive to write (FILE.tar.gz)")
    s.add_argument("--key", action="append", default=[], help="only bundles whose key starts with this")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("import", help="Install AOT bundles from an exported archive.")
    s.add_argument("archive", help="FILE.tar.gz written by `tierlm cache export`")
    s.add_argument("--force", action="store_true", help="install despite an environment mismatch")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("promote", help="Adopt an autotune run (autotune/runs/...) as the canonical result.")
    s.add_argument("run", help="run file path, or its name under autotune/runs/")
    s.set_defaults(func=cmd_promote)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _root() -> CacheRoot:
    try:
        return resolve_root()
    except NotADirectoryError as e:
        raise CLIError(str(e)) from None
    except (OSError, KeyError) as e:
        raise CLIError(f"cannot resolve the cache root ({e}); set TIERLM_CACHE_DIR") from None


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def _age(ts: float) -> str:
    if ts <= 0:
        return "-"
    s = max(0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit} ago"
    return "just now"


def cmd_path(args: argparse.Namespace) -> int:
    """`cache path [SUBSYS]`: one directory (scriptable), or the whole layout with its sources."""
    root = _root()
    if args.subsystem:
        print(root.subsystem_dir(args.subsystem))
        return 0
    print(f"root:      {root.path}  (from {root.source})")
    if root.read_only:
        print(f"read-only: yes; writes go to {root.overlay or 'nowhere (set TIERLM_CACHE_OVERLAY_DIR)'}")
    rows = [(s, str(root.locate(s).path), root.locate(s).source) for s in SUBSYSTEMS]
    print()
    _table(rows, ("SUBSYSTEM", "PATH", "CHOSEN BY"))
    user = user_set_vars(os.environ)
    print()
    rows = []
    for var in THIRD_PARTY_VARS:
        value = os.environ.get(var, "")
        who = "user" if var in user else ("tierlm" if value else "unset (tierlm not imported?)")
        rows.append((var, value or "-", who))
    _table(rows, ("VARIABLE", "VALUE", "SET BY"))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    """`cache ls`: one line per entry/bundle, plus autotune files."""
    root = _root()
    rows = []
    for info in iter_entries(root, args.subsystem):
        state = "unsealed" if info.manifest.get("format") == UNSEALED_FORMAT else "ok"
        if info.damaged:
            state = f"damaged: {info.problem} (`tierlm cache verify` quarantines it)"
        elif in_use(info.path):
            state += ", in use"
        rows.append((info.subsystem, info.name or "-", info.key[:12], format_bytes(tree_size(info.path)),
                     _age(info.last_used), state))
    if rows:
        _table(rows, ("SUBSYSTEM", "NAME", "KEY", "SIZE", "LAST USED", "STATE"))
    else:
        print(f"no entries under {root.path}")
    if args.subsystem in (None, "autotune"):
        store = AutotuneStore(root=root)
        canon = [p for p in store.directory.glob("*/*.json") if p.parent.name != "runs"] \
            if store.directory.is_dir() else []
        runs = store.runs()
        print(f"\nautotune: {len(canon)} canonical result(s), {len(runs)} run(s) in {store.directory / 'runs'}")
        for run in runs[-10:]:
            print(f"  run {run.name}  {_age(run.stat().st_mtime)}")
    return 0


def cmd_du(args: argparse.Namespace) -> int:
    """`cache du`: size of each subsystem directory, total and budget."""
    root = _root()
    rows, total = [], 0
    for s in SUBSYSTEMS:
        size = tree_size(root.subsystem_dir(s))
        total += size
        rows.append((s, format_bytes(size), str(root.subsystem_dir(s))))
    _table(rows, ("SUBSYSTEM", "SIZE", "PATH"))
    budget = os.environ.get("TIERLM_CACHE_MAX_GB")
    print(f"\ntotal: {format_bytes(total)}" + (f" of {budget} GiB budget (TIERLM_CACHE_MAX_GB)" if budget else
                                                 " (no budget; set TIERLM_CACHE_MAX_GB)"))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """`cache gc`: evict LRU entries down to --max-size or TIERLM_CACHE_MAX_GB."""
    try:
        if args.max_size:
            budget = parse_size(args.max_size)
        elif os.environ.get("TIERLM_CACHE_MAX_GB"):
            budget = int(float(os.environ["TIERLM_CACHE_MAX_GB"]) * (1 << 30))
        else:
            raise CLIError("no budget: pass --max-size (e.g. 20G) or set TIERLM_CACHE_MAX_GB")
    except ValueError as e:
        raise CLIError(f"bad budget: {e}") from None
    root = _root()
    if root.write_base is None:
        raise CLIError(f"the cache root {root.path} is read-only and has no overlay; nothing to collect")
    report = collect_garbage(root, budget, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path, size in report.removed:
        print(f"{verb} {path}  ({format_bytes(size)})")
    for path in report.kept_in_use:
        print(f"kept {path}  (in use by a running process)")
    freed = sum(size for _, size in report.removed)
    print(f"{verb} {len(report.removed)} item(s), {format_bytes(freed)}; "
          f"usage {format_bytes(report.before)} -> {format_bytes(report.after)} (budget {format_bytes(budget)})")
    if report.over_budget:
        print(f"still over budget: {format_bytes(report.unmanaged)} is in library-managed trees "
              "(inductor, cuda, ...); use `tierlm cache clear SUBSYS`" if report.unmanaged else
              "still over budget: the remaining entries are in use")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """`cache verify`: exit status 1 if any entry was corrupted."""
    root = _root()
    results = verify_root(root, args.subsystem, fix=not args.no_fix)
    bad = [r for r in results if not r.ok]
    for r in bad:
        first = r.problems[0]
        where = f"; quarantined to {r.quarantined_to}" if r.quarantined_to else ""
        what = first.problem if first.path == r.path.name else f"{first.path}: {first.problem}"
        print(f"CORRUPT {r.subsystem} {r.path}: {what}"
              f"{f' (+{len(r.problems) - 1} more)' if len(r.problems) > 1 else ''}{where}")
    print(f"verified {len(results)} entr{'y' if len(results) == 1 else 'ies'}: {len(results) - len(bad)} ok, "
          f"{len(bad)} corrupt" + (" (will be rebuilt on next use)" if bad and not args.no_fix else ""))
    return 1 if bad else 0


def _confirm(question: str) -> bool:
    if not sys.stdin or not sys.stdin.isatty():
        raise CLIError(f"refusing to {question} without confirmation: stdin is not a terminal; pass --yes")
    answer = input(f"{question}? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def cmd_clear(args: argparse.Namespace) -> int:
    """`cache clear [SUBSYS]`: delete (asks unless --yes); entries in use by a live process are kept."""
    root = _root()
    if root.write_base is None:
        raise CLIError(f"the cache root {root.path} is read-only; nothing can be cleared")
    if args.subsystem and not root.writable(args.subsystem):
        raise CLIError(f"{root.subsystem_dir(args.subsystem)} is read-only; nothing can be cleared")
    targets: List[str] = [args.subsystem] if args.subsystem else [s for s in SUBSYSTEMS if root.writable(s)]
    size = sum(tree_size(root.subsystem_dir(s)) for s in targets)
    what = f"{args.subsystem} cache" if args.subsystem else "the whole cache"
    where = root.subsystem_dir(args.subsystem) if args.subsystem else root.write_base
    if not args.yes and not _confirm(f"delete {what} ({format_bytes(size)}) in {where}"):
        print("nothing deleted")
        return 1
    try:
        kept = sum(clear_subsystem(root, s) for s in targets)
    except OSError as e:
        raise CLIError(f"cannot clear {e.filename}: {e.strerror}") from None
    print(f"cleared {what}: {format_bytes(size)}" + (f"; kept {kept} entr{'y' if kept == 1 else 'ies'} in use"
                                                     if kept else ""))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """`cache export -o FILE`: sealed AOT bundles into one archive."""
    out = Path(args.output)
    if not out.parent.is_dir():
        raise CLIError(f"directory {out.parent} does not exist")
    try:
        keys = export_bundles(_root(), out, args.key)
    except BundleError as e:
        raise CLIError(str(e)) from None
    print(f"exported {len(keys)} bundle(s) to {out} ({format_bytes(out.stat().st_size)}): "
          + ", ".join(k[:12] for k in keys))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """`cache import FILE [--force]`: verify and install bundles."""
    archive = Path(args.archive)
    if not archive.is_file():
        raise CLIError(f"no such file: {archive}")
    root = _root()
    if root.write_base is None:
        raise CLIError(f"the cache root {root.path} is read-only and has no overlay")
    try:
        keys = import_bundles(root, archive, force=args.force)
    except BundleError as e:
        raise CLIError(str(e)) from None
    print(f"imported {len(keys)} bundle(s) into {root.subsystem_dir('aot')}"
          + (": " + ", ".join(k[:12] for k in keys) if keys else " (all already present)"))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """`cache promote RUN`: copy an autotune run over its canonical file."""
    try:
        target = AutotuneStore(root=_root()).promote(args.run)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None
    print(f"promoted {args.run} -> {target}")
    return 0
