"""`tierlm bench startup`: how long an engine takes from construction to its first token, and what it compiled.

Three cache roots per mode (eager, and --compile):
  cold      an empty cache root: everything is compiled (and tuned) and kept in the root's AOT tree;
  warm      the same root again: everything should come from the tree;
  imported  an empty root into which the warm root's AOT tree was exported and imported (`tierlm cache
            export|import`), as on a new machine.
Each start runs in a fresh process (nothing compiled stays in memory), with the third-party cache variables
cleared so that only the case's root is used. Reports construction time, construct-to-first-token time
(construction plus one request's first token), the whole process's time (interpreter and imports included),
torch's compile counters and the kernel binaries compiled into the tree.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.cli.bench.context import bench_context
from tierlm.cli.errors import CLIError
from tierlm.cli.paths import output_dir

MODES = {"eager": False, "compile": True}
CASES = ("cold", "warm", "imported")
COUNTS = ("compilations", "dynamo_graphs", "aot_autograd_misses", "inductor_graph_misses", "new_kernels")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("startup", help="Start-up time and compile counts: cold, warm and imported cache roots.",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("workload options")
    g.add_argument("--modes", default="eager,compile",
                   help="Comma list of eager, compile (default: both; each sets the engine's --compile).")
    g.add_argument("--prompt-len", type=int, default=16, help="Tokens of the first request (default: 16).")
    g.add_argument("--work-dir", help="Directory for the cases' cache roots, kept afterwards (default: a "
                                      "temporary directory, removed afterwards).")
    g.add_argument("--case-timeout", type=float, default=1800.0,
                   help="Seconds one start may take (default: 1800).")
    g.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    add_engine_args(p, model_required=False)
    p.set_defaults(func=run, model="builtin:qwen3-0.6b", load_format="dummy", skip_tokenizer_init=True)


def child_env(root: Path) -> dict[str, str]:
    """The environment of one start: the process's, with every cache location cleared but the root."""
    from tierlm.cachedir.root import SUBSYSTEMS, THIRD_PARTY_VARS, WIRED_VAR, override_var

    drop = {*THIRD_PARTY_VARS, WIRED_VAR, "TIERLM_CACHE_READONLY", "TIERLM_CACHE_OVERLAY_DIR",
            *(override_var(s) for s in SUBSYSTEMS)}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["TIERLM_CACHE_DIR"] = str(root)
    return env


def run_start(config: dict, root: Path, prompt_len: int, timeout: float) -> dict:
    """One engine start in a fresh process on cache root `root`; its report plus the process's wall time."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "tierlm.cli.bench.startup", json.dumps(config), str(prompt_len)],
                              env=child_env(root), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CLIError(f"an engine start took longer than --case-timeout {timeout:g} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CLIError(f"an engine start failed (exit status {proc.returncode}): {why}")
    result = json.loads(lines[-1])
    result["process_s"] = time.perf_counter() - t0
    return result


def _move_tree(source: Path, target: Path, archive: Path) -> Optional[int]:
    """Export the sealed AOT trees of root `source` and import them into root `target`; the archive's size,
    or None when `source` has no sealed tree (nothing was compiled)."""
    from tierlm.cachedir import BundleError, export_bundles, import_bundles, resolve_root

    try:
        export_bundles(resolve_root({"TIERLM_CACHE_DIR": str(source)}), archive)
    except BundleError:
        return None
    try:
        import_bundles(resolve_root({"TIERLM_CACHE_DIR": str(target)}), archive)
    except BundleError as e:
        raise CLIError(f"importing the exported AOT tree failed: {e}") from None
    return archive.stat().st_size


def run_mode(mode: str, config: dict, work: Path, prompt_len: int, timeout: float, progress: bool) -> list[dict]:
    """The three cases of one mode, in order (the warm case reuses the cold root)."""
    rows = []
    roots = {"cold": work / f"{mode}-a", "warm": work / f"{mode}-a", "imported": work / f"{mode}-b"}
    for root in roots.values():
        root.mkdir(exist_ok=True)
    for case in CASES:
        row: dict = {"mode": mode, "root": case}
        if case == "imported":
            size = _move_tree(roots["warm"], roots["imported"], work / f"{mode}-aot.tar.gz")
            if size is None:
                rows.append({**row, "skipped": "no AOT tree to export: this configuration compiles nothing"})
                continue
            row["archive_bytes"] = size
        if progress:
            print(f"starting: {mode}, {case} root ...", file=sys.stderr, flush=True)
        rows.append({**row, **run_start(config, roots[case], prompt_len, timeout)})
    return rows


def run(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise CLIError(f"--modes: unknown mode {', '.join(unknown) or '(none)'}; choose from {', '.join(MODES)}")
    if args.prompt_len < 1:
        raise CLIError(f"--prompt-len must be >= 1, got {args.prompt_len}")
    from tierlm.models.errors import ModelLoadError

    config = config_from_args(args)
    try:  # the first request: its prompt and one token
        config = config.replace(max_model_len=bench_context(config, args.prompt_len + 1,
                                                            f"--prompt-len {args.prompt_len} and one token"))
    except (ModelLoadError, ValueError) as e:
        raise CLIError(str(e)) from None
    work = output_dir(args.work_dir, "--work-dir") if args.work_dir else Path(tempfile.mkdtemp(prefix="tierlm-"))
    taken = [m for m in modes if any((work / f"{m}-{s}").exists() for s in "ab")]
    if args.work_dir and taken:
        raise CLIError(f"--work-dir {args.work_dir!r} already holds the roots of mode {taken[0]}; give an empty "
                       "directory")
    try:
        rows = []
        for mode in modes:
            cfg = dataclasses.asdict(config.replace(compile=MODES[mode]))
            rows.extend(run_mode(mode, cfg, work, args.prompt_len, args.case_timeout, not args.json))
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    for row in rows:
        cold = next(r for r in rows if r["mode"] == row["mode"] and r["root"] == "cold")
        if "first_token_s" in row:
            row["vs_cold"] = row["first_token_s"] / cold["first_token_s"]
    result = {"model": config.model, "cases": rows}
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def format_table(r: dict) -> str:
    lines = [f"model {r['model']}",
             f"{'mode':<9}{'root':<10}{'construct s':>12}{'first token s':>15}{'process s':>11}{'compilations':>14}"
             f"{'new kernels':>13}{'vs cold':>9}"]
    for c in r["cases"]:
        if "skipped" in c:
            lines.append(f"{c['mode']:<9}{c['root']:<10}  skipped: {c['skipped']}")
            continue
        lines.append(f"{c['mode']:<9}{c['root']:<10}{c['construct_s']:>12.2f}{c['first_token_s']:>15.2f}"
                     f"{c['process_s']:>11.2f}{c['compilations']:>14}{c['new_kernels']:>13}{c['vs_cold']:>9.0%}")
    return "\n".join(lines)


def _start(config_json: str, prompt_len: int) -> dict:
    """The measured start (in the child process): construct an engine, then serve one request's first token."""
    from tierlm.config import EngineConfig
    from tierlm.engine.engine import Engine
    from tierlm.sampling_params import SamplingParams

    t0 = time.perf_counter()
    engine = Engine(EngineConfig(**json.loads(config_json)))
    construct = time.perf_counter() - t0
    prompt = [(7 * i) % 97 + 1 for i in range(prompt_len)]
    engine.add_request("first", prompt, SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True,
                                                       detokenize=False))
    done = False
    while not done:
        for out in engine.step():
            if out.error:
                raise SystemExit(f"the first request failed: {out.error}")
            done = done or bool(out.new_token_ids)
    first = time.perf_counter() - t0
    report = engine.startup
    return {"construct_s": construct, "first_token_s": first, "device": str(engine.device),
            **{k: report.get(k, 0) for k in COUNTS}, "aot_key": report.get("aot_key"),
            "new_kernel_names": report.get("new_kernel_names", []), "kv_pool_tokens": engine.info()["kv_pool_tokens"]}


if __name__ == "__main__":
    print(json.dumps(_start(sys.argv[1], int(sys.argv[2]))))
