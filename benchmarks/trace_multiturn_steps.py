"""Per-step timeline of `tierlm bench multiturn`: which engine steps take long, and what the KV tiers did then.

Runs `tierlm bench multiturn` in this process with `Engine.step` and `Engine._launch` wrapped, and prints per
mode the slowest steps (host phases, the batch, the tier counters that moved in that step) and the gaps
in a round's first tokens. Meant to find a stall that a TTFT table only shows as a whole wave of requests
arriving late. Every flag after `--` goes to `bench multiturn` (`--json` is added).

Usage: PYTHONPATH=. python benchmarks/trace_multiturn_steps.py [--top 12] [--min-ms 60] -- <bench multiturn flags>
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time

from tierlm.cli.main import main as cli_main
from tierlm.engine.engine import Engine

PHASES = ("schedule", "launch", "wait", "outputs")


def counters(engine: Engine) -> dict:
    """Flat tier counters of the engine's KV controller (cheap: dict copies, no stats walk)."""
    kv = engine.kv
    out = {}
    for group in ("backups", "prefetch"):
        for k, v in getattr(kv.metrics, group).items():
            out[f"{group}.{k}"] = v
    if kv.evictor is not None:
        out["evicted"] = kv.evictor.evicted_pages_total
        out["reused"] = kv.evictor.reused_pages_total
        out["host_evicted"] = kv.evictor.host_evicted_pages_total
    if kv.io is not None:
        out["l3_dropped"] = kv.io.l3_dropped_pages
    return out


def install(records: dict) -> None:
    """Wrap the engine's step and launch; `records[n]` gets one dict per step of the n-th engine."""
    step, launch = Engine.step, Engine._launch

    def traced_launch(self, batch):
        self._trace_batch = (batch.mode, batch.num_tokens, len(batch.reqs)) if batch is not None else None
        return launch(self, batch)

    def traced_step(self):
        before, phases = counters(self), dict(self.clock.seconds)
        self._trace_batch = None
        t0 = time.perf_counter()
        out = step(self)
        t1 = time.perf_counter()
        after = counters(self)
        moved = {k: round(after[k] - before.get(k, 0), 4) for k in after if after[k] != before.get(k, 0)}
        key = self.__dict__.setdefault("_trace_key", len(records))  # engines in creation order
        records.setdefault(key, []).append({
            "t": t0, "ms": (t1 - t0) * 1e3, "batch": self._trace_batch,
            "phases": {p: (self.clock.seconds[p] - phases[p]) * 1e3 for p in PHASES},
            "moved": moved, "queue": (len(self.scheduler.waiting), len(self.scheduler.running)), "first_tokens": sum(_first(self, o) for o in out if o.new_token_ids)})
        return out

    Engine.step, Engine._launch = traced_step, traced_launch


def _first(engine: Engine, o) -> bool:
    seen = engine.__dict__.setdefault("_trace_seen", set())
    if o.request_id in seen:
        return False
    seen.add(o.request_id)
    return True


def report(steps: list[dict], label: str, top: int, min_ms: float) -> None:
    t_start = steps[0]["t"]
    total = sum(s["ms"] for s in steps)
    slow = [s for s in steps if s["ms"] >= min_ms]
    print(f"\n== {label}: {len(steps)} steps, {total / 1e3:.2f} s in steps, {len(slow)} of >= {min_ms:.0f} ms")
    print(f"{'t s':>7} {'ms':>7}  {'sched':>6} {'launch':>6} {'wait':>7} {'out':>5}  batch               moved")
    for s in sorted(steps, key=lambda s: -s["ms"])[:top]:
        ph = s["phases"]
        b = s["batch"]
        batch = f"{b[0]} {b[1]} tok/{b[2]} req" if b else "-"
        moved = ", ".join(f"{k}+{v}" for k, v in s["moved"].items() if not k.endswith("_s"))
        print(f"{s['t'] - t_start:7.3f} {s['ms']:7.1f}  {ph['schedule']:6.1f} {ph['launch']:6.1f} {ph['wait']:7.1f} "
              f"{ph['outputs']:5.1f}  {batch:<19} {moved[:160]}")
    # gaps between steps that produced first tokens (a stalled wave shows as one long gap)
    marks = [s for s in steps if s["first_tokens"]]
    gaps = sorted(((b["t"] - a["t"]) * 1e3, a["t"] - t_start) for a, b in zip(marks, marks[1:]))[-5:]
    print("longest gaps between steps with first tokens (ms at s):",
          ", ".join(f"{g:.0f} at {t:.2f}" for g, t in reversed(gaps)))
    if gaps:  # the steps inside the longest gap, in order (plain decode steps of usual length left out)
        start = gaps[-1][1] + t_start
        inside = [s for s in steps if start <= s["t"] <= start + gaps[-1][0] / 1e3]
        usual = sorted(s["ms"] for s in inside)[len(inside) // 2] if inside else 0.0
        print(f"  {len(inside)} steps in it, median {usual:.1f} ms; the others:")
        for s in [s for s in inside if s["ms"] > 1.5 * usual or (s["batch"] or ("",))[0] != "decode"][:40]:
            b, ph = s["batch"], s["phases"]
            moved = ", ".join(f"{k}+{v}" for k, v in s["moved"].items() if not k.endswith("_s"))
            print(f"  {s['t'] - t_start:7.3f} {s['ms']:7.1f} ms (sched {ph['schedule']:.1f} launch {ph['launch']:.1f} "
                  f"wait {ph['wait']:.1f} out {ph['outputs']:.1f}; {s['queue'][0]} waiting, {s['queue'][1]} running)  "
                  f"{(f'{b[0]} {b[1]}/{b[2]}' if b else '-'):<16} {moved[:150]}")


def main() -> int:
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=12, help="slowest steps shown per mode")
    p.add_argument("--min-ms", type=float, default=60.0, help="steps at least this long are counted")
    args = p.parse_args(own)
    records: dict = {}
    install(records)
    with contextlib.redirect_stdout(io.StringIO()):  # the bench's JSON summary; the tables below matter here
        rc = cli_main(["bench", "multiturn", *rest, "--json"])
    modes = next((rest[i + 1] for i, a in enumerate(rest) if a == "--modes"), "gpu,l2,l3").split(",")
    for label, steps in zip(modes, records.values()):
        report(steps, label, args.top, args.min_ms)
    return rc


if __name__ == "__main__":
    sys.exit(main())
