"""A request that will not wait for the L3 store (the cost model skips or explores it) has its store lookup,
and the hashing for it, held back until the engine's step has been launched: nothing of it competes with
the launch of the step that serves the request. Outputs are unchanged."""
from __future__ import annotations

import threading

from tests.conftest import CPU_OPTS
from tierlm import LLM, SamplingParams
from tierlm.kvcache.stores.file import FileKVStore

PARAMS = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, detokenize=False)
PROMPT = list(range(3, 3 + 41))  # ten whole pages of 4 and one token


class LoggedStore(FileKVStore):
    """A file store that logs its lookups (through --kv-store module:Class?dir=..)."""

    def __init__(self, dir: str) -> None:
        super().__init__(dir, 10**9)
        self.log: list[str] = []
        self.lock = threading.Lock()

    def batch_exists(self, keys):
        with self.lock:
            self.log.append("lookup")
        return super().batch_exists(keys)


def test_a_lookup_no_request_waits_for_starts_after_the_launch(tiny_qwen3, tmp_path):
    ref = LLM(str(tiny_qwen3), **CPU_OPTS, enable_prefix_cache=False).generate([PROMPT], PARAMS)[0].token_ids
    llm = LLM(str(tiny_qwen3), **CPU_OPTS, enable_hicache=True, hicache_prefetch_threshold=4,
              hicache_load_policy="cost", kv_store=f"{__name__}:LoggedStore?dir={tmp_path}")
    engine, store = llm.engine, llm.engine.kv.store
    executed = engine.worker.execute

    def logged_execute(plan, tickets=None):
        with store.lock:
            store.log.append(f"execute {plan.mode}")
        return executed(plan, tickets)

    engine.worker.execute = logged_execute
    store.log.clear()
    engine.add_request("r", list(PROMPT), PARAMS)  # an unmeasured store: the request explores it
    assert store.log == [] and engine.kv.prefetcher.probe is None
    tokens = []
    while engine.has_unfinished():
        for out in engine.step():
            tokens.extend(out.new_token_ids)
        engine.kv.idle_wait(0.01)  # lets the lookup thread answer between steps, as device time would
    assert tokens == ref
    assert store.log[:2] == ["execute prefill", "lookup"], store.log
    assert engine.stats()["tiers"]["prefetch"]["probes"] == 1
    engine.kv.prefetcher.drain()
    engine.kv.check_no_leak(engine.live_pages())
    llm.close()
