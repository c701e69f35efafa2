"""Which Triton kernels a run meets for the first time after the engine's start-up, and how each differs from
the variants of the same kernel that the start-up built: what a fresh server's first requests compile.

Installs Triton's JIT cache hook (called at a variant's first launch in this process: from the disk cache or a
compile), starts an engine (its tuners, graphs and warm-up), then runs workloads of `bench offline`'s kind. Per
run it prints the variants first met inside it, each against the start-up's variant of that kernel whose
specialization differs in the fewest parameters, with those parameters. On a fresh cache root every one of
them is a compile inside the run.

    PYTHONPATH=. python benchmarks/run_compiles.py [--runs "N:IN:OUT ..."] [--dump FILE] [ENGINE FLAGS]

`--runs` lists workloads (requests : prompt length : output length), each run after the one before; default
"1:64:8 256:64:16 64:700:16" (one request, a burst of short prompts, long prompts in a pass). `--dump` writes
every variant met (phase, kernel, specialization) as JSON; `--diff A.json B.json` (no engine) lists the start-up
variants each of two dumps has and the other lacks.
"""
from __future__ import annotations

import argparse
import json

from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.cli.bench.offline import Workload, run_engine
from tierlm.engine.engine import Engine


class Recorder:
    """Every kernel variant first launched in this process, with the phase it was met in."""

    def __init__(self) -> None:
        self.phase = "start-up"
        self.seen: list[tuple[str, str, tuple]] = []  # (phase, kernel name, specialization per parameter)

    def hook(self, **kw):
        """Triton's `jit_cache_hook`: record the variant (type, constant or attributes per parameter, and the
        launch options), then let Triton compile or load it."""
        try:
            fn, info = kw["fn"], kw["compile"]
            consts, attrs = info.get("constants", {}), (info.get("configs") or [{}])[0]
            spec = []
            for i, (name, ty) in enumerate(info["signature"].items()):
                if (i,) in consts:
                    value = consts[(i,)]
                    spec.append(f"{name}={getattr(value, 'value', value)!r}")
                else:
                    spec.append(f"{name}={ty}{attrs.get((i,), '')}")
            spec.append(f"num_warps={info.get('num_warps')} num_stages={info.get('num_stages')}")
            self.seen.append((self.phase, fn.name, tuple(spec)))
        except Exception as e:  # noqa: BLE001 - a diagnostic: never stop the compile it watches
            self.seen.append((self.phase, f"? ({type(e).__name__}: {e})", ()))
        return None

    def met_in(self, phase: str) -> list[tuple[str, tuple]]:
        return [(name, spec) for p, name, spec in self.seen if p == phase]


def closest(spec: tuple, others: list[tuple]) -> tuple[int, list[str]]:
    """The fewest parameters in which `spec` differs from one of `others`, and those parameters (as `spec` has
    them, then as that variant has them)."""
    best: tuple[int, list[str]] = (len(spec) + 1, [])
    for o in others:
        diff = [f"{a}  (start-up: {b.split('=', 1)[-1]})" for a, b in zip(spec, o) if a != b]
        if len(diff) < best[0]:
            best = (len(diff), diff)
    return best


def startup_diff(a: list, b: list) -> tuple[list, list]:
    """The start-up variants (kernel, specialization) of dump `a` missing from dump `b`, and of `b` missing from
    `a`, each sorted."""
    sa, sb = ({(name, tuple(spec)) for phase, name, spec in d if phase == "start-up"} for d in (a, b))
    return sorted(sa - sb), sorted(sb - sa)


def print_diff(path_a: str, path_b: str) -> None:
    with open(path_a) as fa, open(path_b) as fb:
        only_a, only_b = startup_diff(json.load(fa), json.load(fb))
    for path, only in ((path_a, only_a), (path_b, only_b)):
        print(f"start-up variants only in {path}: {len(only)}")
        for name, spec in only:
            print(f"  {name}: {' '.join(spec)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="1:64:8 256:64:16 64:700:16", help="Workloads, each REQUESTS:IN:OUT.")
    ap.add_argument("--dump", metavar="FILE", help="Write every variant met as JSON: [phase, kernel, [spec...]].")
    ap.add_argument("--diff", nargs=2, metavar=("A", "B"), help="Compare two dumps' start-ups (runs no engine).")
    add_engine_args(ap, model_required=False)
    ap.set_defaults(model="builtin:qwen3-0.6b", load_format="dummy", skip_tokenizer_init=True)
    args = ap.parse_args()
    if args.diff:
        return print_diff(*args.diff)
    from triton import knobs  # CUDA only: the hook sees compiled launches, not the interpreter's

    rec = Recorder()
    knobs.runtime.jit_cache_hook = rec.hook
    engine = Engine(config_from_args(args))
    started = {}
    for name, spec in rec.met_in("start-up"):
        started.setdefault(name, []).append(spec)
    print(f"start-up: {len(rec.seen)} variants of {len(started)} kernels")
    for i, run in enumerate(args.runs.split()):
        n, lin, lout = (int(x) for x in run.split(":"))
        rec.phase = run
        report = run_engine(engine, Workload.make(n, (lin, lin), (lout, lout), engine.model_config.vocab_size, i),
                            0.0, False)
        met = rec.met_in(run)
        print(f"run {run}: TTFT p50 {report['ttft_s']['p50'] * 1e3:.1f} ms, {len(met)} variants first met here")
        for name, spec in met:
            count, diff = closest(spec, started.get(name, []))
            if not diff:
                print(f"  {name}: a kernel the start-up never launched")
                continue
            print(f"  {name}: differs from the closest start-up variant in {count} parameter(s):")
            for d in diff:
                print(f"    {d}")
        for name, spec in met:  # later runs compare against these too
            started.setdefault(name, []).append(spec)
    engine.close()
    if args.dump:
        with open(args.dump, "w") as f:
            json.dump([[phase, name, list(spec)] for phase, name, spec in rec.seen], f, indent=0)


if __name__ == "__main__":
    main()
