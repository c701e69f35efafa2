"""A randomized request stream for engine stress tests: arrivals whose prompts share a prefix, aborts, and the
bookkeeping that checks every request ends exactly once."""
from __future__ import annotations

import random
from typing import Callable

from tierlm.sampling_params import SamplingParams


class RandomWorkload:
    """Drives `engine` one step at a time (`tick` before each step, `take` on its outputs)."""

    def __init__(self, engine, rng: random.Random, shared_len: int, max_extra: int, max_tokens: int,
                 max_live: int, p_arrive: float, p_abort: float) -> None:
        self.engine, self.rng = engine, rng
        self.shared = [rng.randrange(1, 500) for _ in range(shared_len)]
        self.max_extra, self.max_tokens, self.max_live = max_extra, max_tokens, max_live
        self.p_arrive, self.p_abort = p_arrive, p_abort
        self.live: set[str] = set()
        self.finished: dict[str, str] = {}  # request id -> finish reason

    def tick(self, step: int) -> None:
        """Maybe add a request (named after `step`) and maybe abort a live one."""
        rng = self.rng
        if rng.random() < self.p_arrive and len(self.live) < self.max_live:
            rid = f"r{step}"
            prompt = (self.shared[:rng.randrange(0, len(self.shared))]
                      + [rng.randrange(1, 500) for _ in range(rng.randrange(1, self.max_extra))])
            self.engine.add_request(rid, prompt, SamplingParams(temperature=rng.choice([0.0, 1.0]), ignore_eos=True,
                                                                max_tokens=rng.randrange(1, self.max_tokens),
                                                                detokenize=False))
            self.live.add(rid)
        if self.live and rng.random() < self.p_abort:
            self.engine.abort_request(rng.choice(sorted(self.live)))

    def take(self, outs) -> None:
        for out in outs:
            if out.finished:
                assert out.request_id not in self.finished, "a request finished twice"
                self.finished[out.request_id] = out.finish_reason
                self.live.discard(out.request_id)

    def run(self, steps: int, between: Callable[[], None] = lambda: None, check_draining: bool = False) -> None:
        """`steps` steps of arrivals and aborts (`between` runs after each tick: forced evictions and the like),
        checking after each that no KV page leaks; then steps until every request has ended (checking leaks
        there too with `check_draining`)."""
        engine = self.engine
        for step in range(steps):
            self.tick(step)
            between()
            self.take(engine.step())
            engine.kv.check_no_leak(engine.live_pages())
        while engine.has_unfinished():
            self.take(engine.step())
            if check_draining:
                engine.kv.check_no_leak(engine.live_pages())
        assert not self.live
