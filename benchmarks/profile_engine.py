"""Where does a step's time go? Engine step timings and a torch profile of decode on the GPU.

    python benchmarks/profile_engine.py [--model builtin:qwen3-0.6b] [--batch 256] [--input 512]
"""
from __future__ import annotations

import argparse
import random
import time

import torch

from tierlm.config import EngineConfig
from tierlm.engine.engine import Engine
from tierlm.sampling_params import SamplingParams


def fill(engine: Engine, n: int, input_len: int, output_len: int, temperature: float) -> None:
    rng = random.Random(0)
    for i in range(n):
        engine.add_request(f"r{time.perf_counter_ns()}-{i}", [rng.randrange(10000) for _ in range(input_len)],
                           SamplingParams(temperature=temperature, max_tokens=output_len, ignore_eos=True,
                                          detokenize=False))


def decode_step_ms(engine: Engine, n: int, input_len: int, steps: int, temperature: float) -> float:
    fill(engine, n, input_len, steps + 40, temperature)
    while any(r.prefilling for r in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()
    for _ in range(10):
        engine.step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / steps * 1e3
    while engine.has_unfinished():
        engine.step()
    return ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:qwen3-0.6b")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--input", type=int, default=512)
    ap.add_argument("--temperature", type=float, default=0.6)
    args = ap.parse_args()
    cfg = EngineConfig(model=args.model, load_format="dummy", skip_tokenizer_init=True, max_model_len=2048)
    rows = []
    for overlap, graph in ((True, True), (False, True), (False, False)):
        if True:
            engine = Engine(cfg.replace(overlap_schedule=overlap, cuda_graph=graph))
            for bs in (1, 64, args.batch):
                rows.append((overlap, graph, bs, decode_step_ms(engine, bs, args.input, 50, args.temperature)))
            if overlap and graph:
                fill(engine, args.batch, args.input, 200, args.temperature)
                for _ in range(60):
                    engine.step()
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                        torch.profiler.ProfilerActivity.CUDA]) as prof:
                    for _ in range(20):
                        engine.step()
                    torch.cuda.synchronize()
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
                print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15))
                while engine.has_unfinished():
                    engine.step()
            engine.close()
            del engine
            torch.cuda.empty_cache()
    print(f"decode step time, context ~{args.input}: (overlap, cuda graph, batch) -> ms/step, tok/s")
    for overlap, graph, bs, ms in rows:
        print(f"  overlap={overlap!s:5} graph={graph!s:5} bs={bs:4}: {ms:7.3f} ms  {bs / ms * 1e3:9.0f} tok/s")


if __name__ == "__main__":
    main()
