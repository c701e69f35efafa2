"""Where the offline workload's time goes, pass by pass, against what its bytes alone would take.

Runs `tierlm bench offline`'s workload (all requests at t=0; a first run on prompts of another seed fills
the cache root and warms the engine, then the workload itself is recorded) and times every scheduled pass as
the host sees it: with the overlap scheduler a pass's time is the gap from its scheduling to the next one's,
so in steady state it is the device time of one step. Per pass it also counts the decoding requests and the
KV tokens they read. The table groups passes (prefill, and decode steps by batch size) with their measured
seconds against a floor: the KV they read plus one read of the weights a step needs (layers and LM head), at
`--read-tbps` (the best read rate `benchmarks/read_floor.py` measured on the device).

    PYTHONPATH=. python benchmarks/offline_steps.py [--read-tbps 4.56] [--json OUT.json] [ENGINE FLAGS]

`--torch-profile ROWS` records the workload a second time under the torch profiler and prints its device
kernels by total time (graph-replayed ones included), so the pass table's seconds can be split by kernel;
with `--output-len 1 1` the workload is its prefill passes alone.
"""
from __future__ import annotations

import argparse
import json
import time

from benchmarks.timing import device_gaps, print_device_gaps, step_timeline
from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.cli.bench.context import bench_context
from tierlm.cli.bench.offline import Workload, run_engine
from tierlm.engine.engine import Engine
from tierlm.models.errors import ModelLoadError
from tierlm.engine.step_clock import PHASES

BUCKETS = (1, 8, 32, 64, 128, 192, 256, 1 << 30)


def step_weight_bytes(model) -> int:
    """Bytes of weights one decode step reads: every parameter but the input embedding table (only its rows
    for the step's tokens are read), unless the LM head shares it."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())  # a shared tensor counts once
    embed = model.model.embed_tokens.weight
    tied = model.lm_head.weight is embed
    return total if tied else total - embed.numel() * embed.element_size()


def record(engine: Engine, work: Workload, temperature: float) -> tuple[dict, list[tuple]]:
    """Run the workload; (its run_engine report, every pass as (start s, mode, decodes, prefill tokens,
    KV tokens the decodes read, seconds until the next pass, {host seconds of the step that launched it, by
    `StepClock` phase})). A phase `wait` near zero over many passes means the device waited for the host."""
    sched = engine.scheduler
    schedule = sched.schedule
    passes: list[list] = []

    # the host's work before the first launch: seconds in the arrivals and the first schedule, and the times
    # (from the run's start) when the arrivals end, the first schedule starts and ends, the first launch starts
    host = {"adds_s": 0.0, "first_schedule_s": None, "adds_end_s": None, "schedule_start_s": None,
            "schedule_end_s": None, "launch_start_s": None}
    add = engine.add_request
    t_run = [0.0]  # perf_counter at the run's start (set below, next to the device's origin event)

    def counted_add(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return add(*args, **kwargs)
        finally:
            t1 = time.perf_counter()
            host["adds_s"] += t1 - t0
            host["adds_end_s"] = t1 - t_run[0]

    def timed():
        clock = dict(engine.clock.seconds)  # taken inside `schedule`: the phases up to here are the last step's
        t0 = time.perf_counter()
        got, refused = schedule()
        if host["first_schedule_s"] is None:
            t1 = time.perf_counter()
            host["first_schedule_s"] = t1 - t0
            host["schedule_start_s"], host["schedule_end_s"] = t0 - t_run[0], t1 - t_run[0]
        if got is not None:
            decodes = [r for r in got.reqs if not r.prefilling]
            prefill = sum(n for r, n in zip(got.reqs, got.extend_lens) if r.prefilling)
            passes.append([time.perf_counter(), got.mode, len(decodes), prefill, sum(r.kv_len + 1 for r in decodes),
                           clock])
        return got, refused

    sched.schedule, engine.add_request = timed, counted_add
    launch, events = engine._launch, []
    cuda = engine.device.type == "cuda"

    def evented(batch):
        if host["launch_start_s"] is None:
            host["launch_start_s"] = time.perf_counter() - t_run[0]
        start = _event() if cuda else None
        got = launch(batch)
        if cuda:
            events.append((start, _event(), batch.mode if batch is not None else "copies"))
        return got

    if cuda:
        import torch

        torch.cuda.synchronize()
        origin = _event()
    t_run[0] = time.perf_counter()
    engine._launch = evented
    try:
        report = run_engine(engine, work, temperature, False)
    finally:
        sched.schedule = schedule
        engine._launch, engine.add_request = launch, add
    report["host_before_first_launch"] = host
    end, final = time.perf_counter(), dict(engine.clock.seconds)
    if cuda:
        torch.cuda.synchronize()
        starts = [origin.elapsed_time(s) for s, _, _ in events]
        ends = [origin.elapsed_time(e) for _, e, _ in events]
        report["device_steps"] = step_timeline(starts, ends, origin.elapsed_time(_event(sync=True)))
        by_mode: dict[str, float] = {}
        for (_, _, mode), s0, e0 in zip(events, starts, ends):
            by_mode[mode] = by_mode.get(mode, 0.0) + (e0 - s0) / 1e3
        report["device_steps"]["steps_s_by_mode"] = by_mode
    out = []
    for i, p in enumerate(passes):
        nxt, after = (passes[i + 1][0], passes[i + 1][5]) if i + 1 < len(passes) else (end, final)
        out.append((p[0] - passes[0][0], p[1], p[2], p[3], p[4], nxt - p[0],
                    {k: after[k] - p[5][k] for k in PHASES}))
    return report, out


def print_host_before(h: dict, num_requests: int) -> None:
    """The host's time from the run's start to its first launch, in its parts (ms): the arrivals, the gap to
    the first schedule, that schedule, the gap to the launch (compare with the device's "before the first step")."""
    def ms(key: str) -> float:
        return 1e3 * (h[key] or 0.0)

    print(f"host before the first launch: {ms('launch_start_s'):.1f} ms = {num_requests} arrivals {ms('adds_s'):.1f} "
          f"(ending at {ms('adds_end_s'):.1f}) + to the first schedule {ms('schedule_start_s') - ms('adds_end_s'):.1f} "
          f"+ the first schedule {ms('first_schedule_s'):.1f} + to the launch "
          f"{ms('launch_start_s') - ms('schedule_end_s'):.1f}")


def _event(sync: bool = False):
    """A timing CUDA event recorded on the current stream now (waited for when `sync`)."""
    import torch

    ev = torch.cuda.Event(enable_timing=True)
    ev.record()
    if sync:
        ev.synchronize()
    return ev


def summarize(passes: list[tuple], kv_bytes_per_token: int, weight_bytes: int, read_bps: float) -> list[dict]:
    """Rows of the table: passes grouped by kind and decode batch size, with measured and floor seconds."""
    rows: dict[tuple[int, str], dict] = {}
    for _, mode, decodes, prefill, kv_tokens, seconds, host in passes:
        if mode == "decode":
            i = next(i for i, b in enumerate(BUCKETS) if decodes <= b)
            lo = BUCKETS[i - 1] + 1 if i else 1
            key = (2 + i, f"decode {lo}-{BUCKETS[i]}" if i + 1 < len(BUCKETS) else f"decode >{BUCKETS[i - 1]}")
        else:
            key = (0 if mode == "prefill" else 1, mode)
        row = rows.setdefault(key, {"pass": key[1], "passes": 0, "seconds": 0.0, "floor_s": 0.0, "tokens": 0,
                                    "prefill_tokens": 0, "host_s": dict.fromkeys(PHASES, 0.0)})
        for k in PHASES:
            row["host_s"][k] += host[k]
        row["passes"] += 1
        row["seconds"] += seconds
        row["tokens"] += decodes
        row["prefill_tokens"] += prefill
        row["floor_s"] += (kv_tokens * kv_bytes_per_token + weight_bytes) / read_bps
    return [rows[k] for k in sorted(rows)]


def profile_kernels(engine: Engine, work: Workload, temperature: float, rows: int) -> None:
    """The workload once more under the torch profiler: its device kernels by total time."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        report = run_engine(engine, work, temperature, False)
        torch.cuda.synchronize()
    print(f"under the profiler: {report['elapsed_s']:.3f} s; device kernels by total time")
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=70))
    print_device_gaps(device_gaps(prof))


def profile_host(engine: Engine, work: Workload, temperature: float, rows: int) -> None:
    """The workload once more under cProfile: where the host's time goes, by function."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    report = run_engine(engine, work, temperature, False)
    prof.disable()
    print(f"under cProfile: {report['elapsed_s']:.3f} s; functions by own time")
    pstats.Stats(prof).sort_stats("tottime").print_stats(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-requests", type=int, default=256)
    ap.add_argument("--input-len", type=int, nargs=2, default=(100, 1024))
    ap.add_argument("--output-len", type=int, nargs=2, default=(100, 1024))
    ap.add_argument("--read-tbps", type=float, default=4.56, help="Best read rate of the device, TB/s (an H200 by "
                    "benchmarks/read_floor.py).")
    ap.add_argument("--temperature", type=float, default=0.6, help="Sampling temperature (`bench offline`'s).")
    ap.add_argument("--json", help="Also write the table and every pass to this file.")
    ap.add_argument("--host-profile", type=int, default=0, metavar="ROWS", help="Then record the workload again "
                    "under cProfile and print this many of its Python functions by own time.")
    ap.add_argument("--torch-profile", type=int, default=0, metavar="ROWS", help="Then record the workload again "
                    "under the torch profiler and print this many rows of its device kernels by total time.")
    add_engine_args(ap, model_required=False)
    ap.set_defaults(model="builtin:qwen3-0.6b", load_format="dummy", skip_tokenizer_init=True)
    args = ap.parse_args()
    config = config_from_args(args)
    longest = args.input_len[1] + args.output_len[1]
    try:  # as `bench offline` sizes it
        config = config.replace(max_model_len=bench_context(config, longest, f"The longest request ({longest} "
                                                            "tokens of --input-len and --output-len)"))
    except (ModelLoadError, ValueError) as e:
        raise SystemExit(f"offline_steps.py: {e}") from None
    engine = Engine(config)
    def work(seed: int) -> Workload:
        return Workload.make(args.num_requests, tuple(args.input_len), tuple(args.output_len),
                             engine.model_config.vocab_size, seed)

    # warm-up on prompts of another seed (kernels compiled and tuned into the cache root; no prefix-cache
    # hits for the recorded run, whose workload is `tierlm bench offline`'s, seed 0)
    run_engine(engine, work(1), args.temperature, False)
    report, passes = record(engine, work(0), args.temperature)
    kv_bpt = engine.worker.layout.bytes_per_token_all_layers
    weights = step_weight_bytes(engine.worker.runner.model)
    rows = summarize(passes, kv_bpt, weights, args.read_tbps * 1e12)
    if args.torch_profile:
        profile_kernels(engine, work(2), args.temperature, args.torch_profile)
    if args.host_profile:
        profile_host(engine, work(3), args.temperature, args.host_profile)
    gc_stats = engine.gc.snapshot()
    engine.close()
    print(f"{report['output_tokens']} output tokens in {report['elapsed_s']:.3f} s = "
          f"{report['output_tok_per_s']:.0f} tok/s; {len(passes)} passes; KV {kv_bpt} B/token, "
          f"weights read per step {weights / 1e9:.3f} GB, floor at {args.read_tbps} TB/s")
    print(f"{'passes':<16}{'count':>7}{'tokens':>9}{'prefill':>9}{'seconds':>9}{'floor s':>9}{'floor/meas':>11}"
          f"{'ms/pass':>9}   host ms/pass: {' / '.join(PHASES)}")
    total = {"pass": "all", **{k: sum(x[k] for x in rows) for k in
                               ("passes", "seconds", "floor_s", "tokens", "prefill_tokens")},
             "host_s": {k: sum(x["host_s"][k] for x in rows) for k in PHASES}}
    for r in rows + [total]:
        n = max(r["passes"], 1)
        host = " / ".join(f"{1e3 * r['host_s'][k] / n:.3f}" for k in PHASES)
        print(f"{r['pass']:<16}{r['passes']:>7}{r['tokens']:>9}{r['prefill_tokens']:>9}{r['seconds']:>9.3f}"
              f"{r['floor_s']:>9.3f}{r['floor_s'] / max(r['seconds'], 1e-9):>11.2f}{1e3 * r['seconds'] / n:>9.3f}"
              f"   {host}")
    print("slowest passes: start s, mode, decodes, prefill tokens, ms, host ms by phase")
    for p in sorted(passes, key=lambda p: -p[5])[:8]:
        print(f"  {p[0]:8.3f} {p[1]:<8}{p[2]:>5}{p[3]:>7}{1e3 * p[5]:>9.2f}   "
              + " / ".join(f"{1e3 * p[6][k]:.2f}" for k in PHASES))
    if "device_steps" in report:
        t = report["device_steps"]
        print(f"device by CUDA events over the recorded run: {t['run_s']:.3f} s = before the first step "
              f"{t['before_s']:.3f} + inside steps {t['steps_s']:.3f} + waiting between steps {t['between_s']:.3f} "
              f"({t['waits_over_50us']} waits over 50 us) + after the last {t['after_s']:.3f}; inside steps by mode: "
              + ", ".join(f"{m} {v:.3f}" for m, v in t["steps_s_by_mode"].items()))
    print_host_before(report["host_before_first_launch"], args.num_requests)
    print(f"garbage collections over all runs: {gc_stats}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"report": report, "rows": rows, "passes": passes}, f)


if __name__ == "__main__":
    main()
