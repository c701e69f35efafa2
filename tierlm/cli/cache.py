"""`tierlm cache`: inspect and maintain the compile-cache root (path, ls, du, gc, verify, clear, export,
import, promote). Never imports torch."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Sequence

from tierlm.cachedir import (SUBSYSTEMS, AutotuneStore, BundleError, CacheRoot, export_bundles, format_bytes,
                             import_bundles, iter_entries, resolve_root, verify_root)
from tierlm.cachedir.budget import BUDGET_VAR, budget_from_env
from tierlm.cachedir.fsutil import iter_files, tree_size
from tierlm.cachedir.inventory import ENTRY_SUBSYSTEMS, UNSEALED_FORMAT
from tierlm.cachedir.lease import in_use
from tierlm.cachedir.root import THIRD_PARTY_VARS, user_set_vars
from tierlm.cli import cache_maint
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

    s = sub.add_parser("ls", help="List entries, AOT bundles and autotune results.")
    s.add_argument("subsystem", nargs="?", choices=SUBSYSTEMS, metavar="SUBSYS",
                   help=f"one of: {', '.join(SUBSYSTEMS)}")
    s.set_defaults(func=cmd_ls)

    s = sub.add_parser("du", help="Disk usage per subsystem.")
    s.set_defaults(func=cmd_du)

    s = sub.add_parser("gc", help="Evict least-recently-used entries until the root fits the budget.")
    s.add_argument("--max-size", help="budget with a unit, e.g. 20G or 500M (default: TIERLM_CACHE_MAX_GB, in GiB)")
    s.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    s.set_defaults(func=lambda args: cache_maint.cmd_gc(args, _root()))

    s = sub.add_parser("verify", help="Re-hash every entry; quarantine corrupted ones (rebuilt on next use).")
    s.add_argument("subsystem", nargs="?", choices=SUBSYSTEMS, metavar="SUBSYS",
                   help=f"one of: {', '.join(SUBSYSTEMS)}")
    s.add_argument("--no-fix", action="store_true", help="report only, do not quarantine")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("clear", help="Delete a subsystem's cache, or everything (asks first).")
    s.add_argument("subsystem", nargs="?", choices=SUBSYSTEMS, metavar="SUBSYS")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    s.set_defaults(func=lambda args: cache_maint.cmd_clear(args, _root()))

    s = sub.add_parser("export", help="Write sealed AOT bundles to a .tar.gz.")
    s.add_argument("-o", "--output", required=True, metavar="FILE", help="archive to write (FILE.tar.gz)")
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


def _not_entries(root: CacheRoot, subsystem: str) -> str:
    """One line on a subsystem that holds no TierLM entries: what it is, how many files, how big."""
    base = root.subsystem_dir(subsystem)
    count = sum(1 for _ in iter_files(base)) if base.is_dir() else 0
    return (f"{subsystem}: {cache_maint.OWNERS[subsystem]}; {count} file(s), {format_bytes(tree_size(base))} "
            f"in {base}")


def cmd_ls(args: argparse.Namespace) -> int:
    """`cache ls [SUBSYS]`: one line per entry/bundle, autotune results and runs; a summary elsewhere."""
    root = _root()
    if args.subsystem is not None and args.subsystem not in ENTRY_SUBSYSTEMS:
        print(_not_entries(root, args.subsystem) + "; not split into entries")
        return 0
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
        results, runs = store.results(), store.runs()
        print(f"\nautotune: {len(results)} canonical result(s), {len(runs)} run(s) in {store.directory / 'runs'}")
        for path in results:
            print(f"  result {path.parent.name}/{path.name}  {_age(path.stat().st_mtime)}  {path}")
        for run in runs[-10:]:
            print(f"  run {run.name}  {_age(run.stat().st_mtime)}")
    return 0


def cmd_du(args: argparse.Namespace) -> int:
    """`cache du`: size of each subsystem directory, total and budget."""
    root = _root()
    try:
        budget = budget_from_env()
    except ValueError as e:
        raise CLIError(str(e)) from None
    rows, total = [], 0
    for s in SUBSYSTEMS:
        size = tree_size(root.subsystem_dir(s))
        total += size
        rows.append((s, format_bytes(size), str(root.subsystem_dir(s))))
    _table(rows, ("SUBSYSTEM", "SIZE", "PATH"))
    print(f"\ntotal: {format_bytes(total)}" + (f" of {format_bytes(budget)} budget ({BUDGET_VAR})"
                                                 if budget is not None else f" (no budget; set {BUDGET_VAR})"))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """`cache verify`: exit status 1 if any entry was corrupted or damaged."""
    root = _root()
    if args.subsystem is not None and args.subsystem not in ENTRY_SUBSYSTEMS:
        why = ("each page carries a checksum, checked whenever it is read (a bad page reads as a miss)"
               if args.subsystem == "kv" else "its files have no TierLM manifest to check against")
        print(f"{_not_entries(root, args.subsystem)}; nothing to verify: {why}")
        return 0
    results = verify_root(root, args.subsystem, fix=not args.no_fix)
    bad = [r for r in results if not r.ok]
    for r in bad:
        first = r.problems[0]
        what = first.problem if first.path == r.path.name else f"{first.path}: {first.problem}"
        print(f"CORRUPT {r.subsystem} {r.path}: {what}"
              f"{f' (+{len(r.problems) - 1} more)' if len(r.problems) > 1 else ''}"
              f"{f'; quarantined to {r.quarantined_to}' if r.quarantined_to else ''}")
    print(f"verified {len(results)} entr{'y' if len(results) == 1 else 'ies'}: {len(results) - len(bad)} ok, "
          f"{len(bad)} corrupt" + (" (will be rebuilt on next use)" if bad and not args.no_fix else ""))
    return 1 if bad else 0


def cmd_export(args: argparse.Namespace) -> int:
    """`cache export -o FILE`: sealed AOT bundles into one archive."""
    out = Path(args.output)
    if out.is_dir() or args.output.endswith(os.sep):
        what = "is a directory" if out.is_dir() else "ends with a slash"
        raise CLIError(f"--output {args.output}: {what}; give the archive's file name, "
                       f"e.g. {out / 'bundles.tar.gz'}")
    if not out.parent.is_dir():
        raise CLIError(f"--output {args.output}: directory {out.parent} does not exist")
    try:
        keys = export_bundles(_root(), out, args.key)
    except BundleError as e:
        raise CLIError(str(e)) from None
    except OSError as e:
        raise CLIError(f"--output {args.output}: cannot write it ({e.strerror})") from None
    print(f"exported {len(keys)} bundle(s) to {out} ({format_bytes(out.stat().st_size)}): "
          + ", ".join(k[:12] for k in keys))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """`cache import FILE [--force]`: verify and install bundles."""
    archive = Path(args.archive)
    if archive.is_dir():
        raise CLIError(f"ARCHIVE {archive}: is a directory; give the .tar.gz written by `tierlm cache export`")
    if not archive.is_file():
        raise CLIError(f"ARCHIVE {archive}: no such file")
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
    """`cache promote RUN`: copy an autotune run over its canonical file, keeping the old one as a run."""
    try:
        target, backup = AutotuneStore(root=_root()).promote_with_backup(args.run)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None
    except OSError as e:
        raise CLIError(f"cannot promote {args.run}: {e}") from None
    print(f"promoted {args.run} -> {target}")
    if backup is not None:
        print(f"the result it replaced is kept as run {backup.name} (`tierlm cache promote {backup.name}` "
              "restores it)")
    return 0
