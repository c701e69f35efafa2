"""Per-step timeline of `tierlm bench multiturn`: which engine steps take long, and what the KV tiers did then.

Runs `tierlm bench multiturn` in this process with `Engine.step` and `Engine._launch` wrapped, and prints per
mode the slowest steps (host phases, the batch, the tier counters that moved in that step) and the gaps
in a round's first tokens. Meant to find a stall that a TTFT table only shows as a whole wave of requests
arriving late. Every flag after `--` goes to `bench multiturn` (`--json` is added).

With `--wave R W`, also every step from the first submission of wave W of round R (clients W*c .. W*c+c-1 for
concurrency c, both counted from 0) to the last first token of that wave: where two modes differ in TTFT,
the step that differs; on CUDA each step's own device time (events around its launch on the compute stream)
is listed too.

With `--no-forward`, the model's forward returns zero logits: what is left of each step is the engine's own
host work (scheduling, tier copies, sampling), so modes can be compared on a CPU by their host phases.

Usage: PYTHONPATH=. python benchmarks/trace_multiturn_steps.py [--top 12] [--min-ms 60] [--wave R W] [--profile-ms MS]
       [--no-forward] -- <bench multiturn flags>
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import sys
import time

import torch

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


def install(records: dict, profile_ms: float = 0.0) -> None:
    """Wrap the engine's step and launch; `records[n]` gets one dict per step of the n-th engine. With
    `profile_ms`, every step runs under cProfile and those whose schedule and launch phases take longer keep
    their top functions (where the host spends, or blocks on the device, before the device has work)."""
    step, launch, add = Engine.step, Engine._launch, Engine.add_request

    def traced_add(self, request_id, *args, **kwargs):
        self.__dict__.setdefault("_trace_added", {})[request_id] = time.perf_counter()
        return add(self, request_id, *args, **kwargs)

    def traced_launch(self, batch):
        self._trace_batch = (batch.mode, batch.num_tokens, len(batch.reqs)) if batch is not None else None
        if batch is None or not torch.cuda.is_available():
            return launch(self, batch)
        # events on the compute stream around the step's work: the first runs once the previous step's
        # kernels are done, so their span is this step's own time on the device (waits for the host included)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        try:
            return launch(self, batch)
        finally:
            end.record()
            self._trace_device = (start, end)

    def traced_step(self):
        before, phases = counters(self), dict(self.clock.seconds)
        self._trace_batch = self._trace_device = None
        prof = cProfile.Profile() if profile_ms else None
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        out = step(self)
        if prof is not None:
            prof.disable()
        t1 = time.perf_counter()
        spent = {p: (self.clock.seconds[p] - phases[p]) * 1e3 for p in PHASES}
        profile = _top(prof) if prof is not None and spent["schedule"] + spent["launch"] >= profile_ms else None
        after = counters(self)
        moved = {k: round(after[k] - before.get(k, 0), 4) for k in after if after[k] != before.get(k, 0)}
        key = self.__dict__.setdefault("_trace_key", len(records))  # engines in creation order
        firsts = [o.request_id for o in out if o.new_token_ids and _first(self, o)]
        records.setdefault(key, []).append({
            "t": t0, "ms": (t1 - t0) * 1e3, "batch": self._trace_batch, "phases": spent, "moved": moved,
            "queue": (len(self.scheduler.waiting), len(self.scheduler.running)), "first_tokens": len(firsts),
            "firsts": firsts, "added": self.__dict__.get("_trace_added", {}), "profile": profile,
            "device": self._trace_device})
        return out

    Engine.step, Engine._launch, Engine.add_request = traced_step, traced_launch, traced_add


def skip_forward() -> None:
    """Make every forward return zero logits (after its attention metadata is prepared): host work only."""
    from tierlm.engine.model_runner import ModelRunner

    def forward(self, batch, sites):
        self.attn.prepare(batch)
        return torch.zeros((sites.count, self.model_cfg.vocab_size), dtype=torch.float32)
    ModelRunner.forward = forward


def _top(prof: cProfile.Profile) -> str:
    """The profile's top functions by cumulative and by own time (a call blocking on the device shows in both)."""
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("cumulative").print_stats(22)
    stats.sort_stats("tottime").print_stats(10)
    return text.getvalue()


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
    rest = steps[1:]  # the first step compiles
    print("host ms per step: " + " / ".join(
        f"{p} {sum(s['phases'][p] for s in rest) / max(len(rest), 1):.3f}" for p in PHASES))
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


def wave(steps: list[dict], label: str, rnd: int, w: int, conc: int) -> None:
    """Every step from the wave's first submission to its last first token, with phases and queues."""
    ids = {f"{rnd}-{c}" for c in range(w * conc, (w + 1) * conc)}
    added = steps[-1]["added"]
    if not ids <= added.keys():
        print(f"\n== {label}: round {rnd} wave {w} not found")
        return
    t0 = min(added[i] for i in ids)
    last = max((k for k, s in enumerate(steps) if ids & set(s["firsts"])), default=len(steps) - 1)
    first = next(k for k, s in enumerate(steps) if s["t"] + s["ms"] / 1e3 >= t0)
    print(f"\n== {label}: round {rnd} wave {w}, submitted over {1e3 * (max(added[i] for i in ids) - t0):.1f} ms; "
          f"steps from then to its last first token (ms since its first submission)")
    print(f"{'at ms':>7} {'ms':>6}  {'sched':>6} {'launch':>6} {'wait':>6} {'out':>5} {'device':>7}  queue  batch"
          f"              firsts moved")
    for s in steps[first:last + 1]:
        ph, b = s["phases"], s["batch"]
        batch = f"{b[0]} {b[1]}/{b[2]}" if b else "-"
        moved = ", ".join(f"{k}+{v}" for k, v in s["moved"].items() if not k.endswith("_s"))
        dev = f"{s['device'][0].elapsed_time(s['device'][1]):7.2f}" if s.get("device") else f"{'-':>7}"
        print(f"{1e3 * (s['t'] - t0):7.1f} {s['ms']:6.1f}  {ph['schedule']:6.2f} {ph['launch']:6.2f} {ph['wait']:6.2f} "
              f"{ph['outputs']:5.2f} {dev}  {s['queue'][0]:>2}/{s['queue'][1]:<2}  {batch:<18} "
              f"{len(ids & set(s['firsts'])):>6} {moved[:110]}")


def main() -> int:
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=12, help="slowest steps shown per mode")
    p.add_argument("--min-ms", type=float, default=60.0, help="steps at least this long are counted")
    p.add_argument("--profile-ms", type=float, default=0.0,
                   help="profile every step; print the top functions of the 3 steps with the longest schedule + "
                        "launch phases over this many ms")
    p.add_argument("--no-forward", action="store_true", help="zero logits instead of the model's forward")
    p.add_argument("--wave", type=int, nargs=2, metavar=("ROUND", "WAVE"),
                   help="also list every step of this wave (round and wave counted from 0)")
    args = p.parse_args(own)
    records: dict = {}
    install(records, args.profile_ms)
    if args.no_forward:
        skip_forward()
    with contextlib.redirect_stdout(io.StringIO()):  # the bench's JSON summary; the tables below matter here
        rc = cli_main(["bench", "multiturn", *rest, "--json"])
    modes = next((rest[i + 1] for i, a in enumerate(rest) if a == "--modes"), "gpu,l2,l3").split(",")
    for label, steps in zip(modes, records.values()):
        report(steps, label, args.top, args.min_ms)
    if args.profile_ms:
        for label, steps in zip(modes, records.values()):
            host = lambda s: s["phases"]["schedule"] + s["phases"]["launch"]  # noqa: E731
            for s in sorted((s for s in steps[1:] if s["profile"]), key=lambda s: -host(s))[:3]:
                print(f"\n== {label}: schedule {s['phases']['schedule']:.1f} ms + "
                      f"launch {s['phases']['launch']:.1f} ms, batch {s['batch']}, moved {s['moved']}")
                body = s["profile"].splitlines()
                print("\n".join(line[:170] for line in body if line.strip() and not line.lstrip().startswith(
                    ("Ordered by", "List reduced", "function calls"))))
    if args.wave:
        conc = int(next((rest[i + 1] for i, a in enumerate(rest) if a == "--concurrency"), 8))
        for label, steps in zip(modes, records.values()):
            wave(steps, label, *args.wave, conc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
