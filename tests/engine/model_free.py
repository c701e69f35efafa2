"""A scheduler over a tight KV pool driven without a model, for tests of its bookkeeping: random prompts (some
sharing a prefix, so admissions match cached pages), random budgets, requests finishing at their budget; with a
host tier, the backups and load-backs each step decides are executed as a worker would."""
from __future__ import annotations

import random
from typing import Any, Callable, Optional

from tests.kvcache.tiers import make_tiered
from tierlm.engine.request import Req
from tierlm.engine.scheduler import Scheduler
from tierlm.kvcache.manager import KVCacheManager
from tierlm.sampling_params import SamplingParams

PAGE = 4


def tight_scheduler(reserve: int, tiered: bool) -> Scheduler:
    """A scheduler of 12 slots over 64 pages of `PAGE` tokens (with `tiered`, 48 host pages behind them)."""
    kv = (make_tiered(PAGE, 64, 48, max_reqs=12, threads=False, write_threshold=1)[0] if tiered
          else KVCacheManager(64, PAGE, max_reqs=12, enable_prefix_cache=True))
    return Scheduler(kv, 12, 48, reserve_new_tokens=reserve)


def drive(sched: Scheduler, seed: int, on_step: Callable[[int, Any, list, Optional[Any]], None],
          tiered: bool = False) -> None:
    """Arrivals over 300 steps, then steps until every request finished. Each step: `schedule()`, then (with
    `tiered`) the step's copies taken and executed, then `on_step(step, batch, refused, copies)` (copies None
    without a tier), then the batch's tokens applied: a request whose prompt is done samples a token and stops at
    its budget."""
    rng = random.Random(seed)
    kv = sched.kv
    shared = [rng.randrange(1, 99) for _ in range(12)]
    for step in range(5000):
        if step >= 300 and not sched.has_work():
            break
        if step < 300 and rng.random() < 0.5:
            prompt = shared[:rng.randrange(0, 12)] + [rng.randrange(1, 99) for _ in range(rng.randrange(1, 40))]
            max_new = rng.randrange(1, 60)
            sched.add(Req(f"q{step}", len(prompt), prompt, SamplingParams(max_tokens=max_new), max_new))
        batch, refused = sched.schedule()
        copies = None
        if tiered:
            copies = kv.take_copies()
            for c in copies.backups:
                kv.io.backup(c.device_pages, c.host_pages, c.keys, c.ticket)
            kv.io.load(copies.load_host, copies.load_device)
        on_step(step, batch, refused, copies)
        for r, n in zip(batch.reqs, batch.extend_lens) if batch else ():
            r.kv_len += n
            if r.kv_len == r.seq_len:
                r.token_ids.append(rng.randrange(1, 99))
                r.decodable = True
                if len(r.token_ids) - r.prompt_len >= r.max_new_tokens:
                    r.finish_reason = "length"
                    sched.remove(r, cache=True)
    assert not sched.has_work()
