"""`Engine`: the synchronous core loop — accept requests, schedule, run the model, sample, stream deltas."""
from __future__ import annotations

import logging
import time
from typing import Optional

import torch

from tierlm.config import EngineConfig
from tierlm.engine import startup
from tierlm.engine.admission import new_request
from tierlm.engine.batch import ScheduledBatch
from tierlm.engine.errors import RequestError
from tierlm.engine.engine_stats import engine_info, engine_stats
from tierlm.engine.gc_watch import GcWatch, freeze_heap, thaw_heap
from tierlm.engine.guided import GuidedDecoding
from tierlm.engine.inflight import InFlight, Readback
from tierlm.engine.kv_setup import build_kv_cache
from tierlm.engine.min_tokens import MinTokens
from tierlm.engine.mixed_budget import MixedBudget
from tierlm.engine.mixed_graph import mixed_graph_align, token_sizes
from tierlm.engine.outputs import StepOutput, TokenLogprob, step_output
from tierlm.engine.penalties import Penalties
from tierlm.engine.plan import make_plan
from tierlm.engine.prefill_timer import PrefillTimer
from tierlm.engine.prompt_logprobs import plan_fields, record, score_spans
from tierlm.engine.request import Req
from tierlm.engine.sampler import Sampler
from tierlm.engine.scheduler import Scheduler
from tierlm.engine.step_clock import StepClock
from tierlm.engine.tokenizer import load_tokenizer
from tierlm.engine.rank_launch import start_workers
from tierlm.models.config import ModelConfig
from tierlm.models.generation_config import GenerationDefaults, generation_defaults
from tierlm.models.loader import resolve_model_dir
from tierlm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


class Engine:
    """One model on one device. Not thread-safe: one caller drives `add_request`/`abort_request`/`step`.

    Bad requests raise `RequestError` from `add_request` (nothing is queued); a request that cannot ever
    fit the KV pool finishes with an error output; neither disturbs the other requests.
    """

    def __init__(self, config: EngineConfig) -> None:
        probe = startup.Probe()
        config.validate()
        self.config = config
        self.model_dir = resolve_model_dir(config.model, config.revision, need_weights=config.load_format != "dummy")
        self.model_config = ModelConfig.from_dir(self.model_dir)
        self.tokenizer = None if config.skip_tokenizer_init else load_tokenizer(
            config.tokenizer or str(self.model_dir), config.revision)
        self.max_model_len = self.model_config.context_limit(config.max_model_len)
        self.generation = generation_defaults(config.generation_config, self.model_dir)
        if self.generation != GenerationDefaults():
            logger.info("generation_config: %s (--generation-config none to ignore)", self.generation.describe())
        self.model_name = config.served_model_name or config.model
        # The worker executes step plans (model, pools, copies); the KV controller and the scheduler decide.
        # Under --tp-size N it is a group: this process's rank 0 plus N - 1 ranks that execute the same plans.
        self.worker = start_workers(config, self.model_dir, self.model_config, self.max_model_len,
                                    self.max_model_len + config.page_size)
        self.device = self.worker.device
        self.kv_events = None  # a publisher when --kv-events-config asks for events (pyzmq imported only then)
        if config.kv_events_config is not None:
            from tierlm.engine.kv_events import open_publisher
            self.kv_events = open_publisher(config)
        try:
            self.kv = build_kv_cache(config, self.worker, self.model_config.raw, self.model_dir,
                                     events=self.kv_events)
        except BaseException:
            if self.kv_events is not None:
                self.kv_events.close()
            self.worker.close()
            raise
        mixed = MixedBudget()  # mixed steps off
        if config.enable_mixed_chunk:
            mixed = MixedBudget(config.max_mixed_tokens, mixed_graph_align(config),
                                tuple(token_sizes(config.max_mixed_tokens)), config.mixed_backlog_steps,
                                config.mixed_burst_tokens, config.mixed_burst_prefill)
        self.scheduler = Scheduler(self.kv, config.max_running_requests, config.max_prefill_tokens,
                                   config.reserve_new_tokens, mixed, config.schedule_policy)
        self.sampler = Sampler(self.device, config.seed)
        self.penalties = Penalties(self.device)
        # the compute rate of the KV tiers' cost model (load or recompute)
        self.prefill_timer = PrefillTimer(self.device, self.kv.observe_prefill if self.kv.cost else None)
        self.eos_ids = set(self.model_config.eos_token_ids) | set(self.generation.eos_token_ids)
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        self.min_tokens = MinTokens(self.eos_ids)
        self.guided = GuidedDecoding(self.tokenizer, self.model_config.vocab_size, self.eos_ids, self.device)
        self._pending: list[StepOutput] = []  # outputs produced outside a step (aborts, refusals)
        self._inflight: Optional[InFlight] = None  # launched on the device, not yet read back
        self.overlap = config.overlap_schedule
        self._readback = Readback(self.device, config.max_running_requests)
        self.clock = StepClock()  # host time per step phase (/stats "step_host")
        self.counters = {"prompt_tokens": 0, "cached_tokens": 0, "generated_tokens": 0, "requests": 0,
                         "cache_hits": 0}
        self.startup: dict = startup.finish(self, probe)
        # what start-up built is never walked again by a collection while serving
        self.gc = GcWatch(freeze_heap() if config.gc_freeze else 0)  # the collector's pauses (stats "gc")

    # ---- requests ------------------------------------------------------------------------------------------
    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                    cache: bool = True) -> None:
        """Queue a request; raises `RequestError` (or `PromptTooLongError`) for one the engine cannot serve.
        `cache` False: nothing of it enters the prefix cache or the lower tiers (warm-ups)."""
        if self.scheduler.find(request_id) is not None or self.guided.compiling(request_id) is not None:
            raise RequestError(f"request id {request_id!r} is already in use")
        req = new_request(request_id, prompt_token_ids, params, cache, tokenizer=self.tokenizer,
                          vocab_size=self.model_config.vocab_size, max_model_len=self.max_model_len,
                          device=self.device)
        # first: a schema it cannot follow refuses the request before anything holds it; a guided one is queued
        # when its grammar has compiled (`step`)
        ready = self.guided.expect(req)
        self.penalties.expect(req)
        self.min_tokens.expect(req)
        if ready:
            self.scheduler.add(req)
        self.counters["requests"] += 1

    def abort_request(self, request_id: str) -> None:
        """Stop a request and free its KV now; the next `step` reports it with finish_reason 'abort'."""
        req = self.scheduler.find(request_id) or self.guided.compiling(request_id)
        if req is None:
            return
        self.scheduler.remove(req, cache=False)
        self._forget(req)
        req.finish_reason = "abort"
        self._pending.append(step_output(req, []))

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work() or bool(self._pending) or self._inflight is not None or \
            self.guided.num_compiling > 0

    def keep_warm(self) -> bool:
        """Keep an idle device quick to start the next request (`Worker.keep_warm`; the server's loop calls it)."""
        return self.worker.keep_warm()

    def lost(self, grace_s: float = 0.0) -> Optional[str]:
        """Why this engine can never run a step again (a tensor-parallel rank is gone), or None
        (`WorkerGroup.lost`)."""
        return self.worker.lost(grace_s)

    def num_waiting(self) -> int:
        """Requests queued, not yet admitted (what a server bounds; cheap, unlike `stats()`)."""
        return len(self.scheduler.waiting) + self.guided.num_compiling

    # ---- the loop ------------------------------------------------------------------------------------------
    def step(self) -> list[StepOutput]:
        """Run one scheduling step; return per-request deltas (new tokens/text, finish state).

        With overlap scheduling the step launches batch N+1 on the device before it reads back the tokens
        of batch N, so the host's bookkeeping runs while the device computes; results come one step late.
        """
        clock = self.clock
        clock.start()
        outputs, self._pending = self._pending, []
        idle = not outputs and self._inflight is None and not self.scheduler.has_work()
        for req, error in self.guided.compiled(timeout=0.01 if idle else 0.0):  # guided requests ready to queue
            if error is None:
                self.scheduler.add(req)
            else:
                outputs.append(self._refuse(req, error))
        batch, refused = self.scheduler.schedule()
        for req in refused:
            outputs.append(self._refuse(req, f"request needs {req.max_seq_len} tokens of KV (prompt + max_tokens) "
                                        f"but the KV pool holds {self.kv.capacity_pages * self.kv.page_size}; "
                                        "lower max_tokens or raise --kv-cache-gb"))
        clock.lap("schedule")
        launched = self._launch(batch)
        clock.lap("launch")
        self.kv.after_launch()  # tier work held back from the launch (L3 lookups that no request waits for)
        clock.lap("schedule")
        previous, self._inflight = self._inflight, launched
        if isinstance(launched, tuple):  # guided rows' masks need the tokens in flight (`previous`): sampled after
            outputs.extend(self._resolve(previous))
            previous, self._inflight = None, self._sample(*launched)
        if previous is not None:
            outputs.extend(self._resolve(previous))
        if not self.overlap and self._inflight is not None:
            outputs.extend(self._resolve(self._inflight))
            self._inflight = None
        if self.kv_events is not None:
            self.kv_events.flush()  # one event batch per step
        clock.lap("outputs")
        return outputs

    def _launch(self, batch: Optional[ScheduledBatch]) -> Optional[InFlight | tuple]:
        """Turn the scheduled batch and the tier copies decided so far into a step plan, have the worker
        execute it, and sample; or, where a guided request of it has a token in flight (its mask needs that
        token), return the arguments of `_sample` for the caller to sample once it has read the tokens back (the
        device runs the pass meanwhile)."""
        copies = self.kv.take_copies()
        reqs, lens = (batch.reqs, batch.extend_lens) if batch is not None else ([], [])
        writes = (batch.map_rows, batch.map_positions, batch.map_slots) if batch is not None else ([], [], [])
        plan, sampling = make_plan(batch.mode if batch is not None else "copies", reqs, lens, writes, copies)
        if not plan.has_forward and not plan.load_host and not plan.backups and plan.fence < 0:
            return None
        spans = score_spans(reqs, plan.prefix_lens, lens) if plan.mode == "prefill" else []
        if spans:
            plan.score_index, plan.score_targets, plan.score_top = plan_fields(spans)
        with self.prefill_timer.measure(plan):
            result = self.worker.execute(plan, [c.ticket for c in copies.backups])
        for req, n in zip(reqs, lens):
            req.kv_len += n
        if result is not None and result[2] is not None:
            record(spans, result[2])
        if result is None or not sampling:
            return None
        logits, sites, _ = result
        # penalties and bans now: a request that ends when the tokens in flight are read is still sampled (its
        # token is dropped), as under overlap without guided requests
        args = (sampling, logits, sites, self.penalties.batch(sampling, logits.shape[-1]),
                self.min_tokens.bans(sampling))
        if self.scheduler.num_guided and any(r.guided and r.num_pending for r in sampling):
            return args
        return self._sample(*args)

    def _sample(self, sampling: list[Req], logits: torch.Tensor, sites: object, penalties: object,
                bans: object) -> InFlight:
        """Sample the pass's tokens (guided rows masked to their grammars), share them, start their read-back."""
        params = [r.params for r in sampling]
        tokens = self.sampler.sample(logits, params, [r.generator for r in sampling], self.worker.token_sink(sites),
                                     penalties, bans, self.guided.masker(sampling))
        logprobs = self.sampler.logprobs(logits, tokens, params)
        self.worker.share_tokens(tokens)  # tensor parallel: the other ranks store them too
        for req in sampling:
            req.num_pending += 1
            req.decodable = True
        return self._readback.start(sampling, tokens, logprobs)

    def _resolve(self, step: "InFlight") -> list[StepOutput]:
        self.clock.lap("outputs")  # what ran since the last lap (nothing, or the first resolve's outputs)
        tokens, logprobs = step.wait()
        self.clock.lap("wait")
        now = time.perf_counter()
        outputs = []
        for i, (req, tok) in enumerate(zip(step.reqs, tokens)):
            req.num_pending -= 1
            if req.finish_reason is not None:  # aborted, or stopped while this step was in flight
                continue
            if req.first_token_time is None:
                req.first_token_time = now
                self.counters["prompt_tokens"] += req.prompt_len
                self.counters["cached_tokens"] += req.num_cached_tokens
                self.counters["cache_hits"] += req.num_cached_tokens > 0
            lp = logprobs(i, req.params.logprobs) if logprobs is not None and req.logprobs is not None else None
            outputs.append(self._append_token(req, tok, lp))
        self.counters["generated_tokens"] += len(outputs)
        return outputs

    def _append_token(self, req: Req, tok: int, lp: Optional[TokenLogprob]) -> StepOutput:
        ids = req.token_ids
        ids.append(tok)
        if lp is not None:
            req.logprobs.append(lp)
        p = req.params
        early = p.min_tokens > 0 and self.min_tokens.early(req)  # no stop of any kind yet
        grammar = self.guided.accept(req, tok) if req.guided else None  # "complete", "rejected" or None
        if not early and ((tok in self.eos_ids and not p.ignore_eos) or tok in p.stop_token_ids):
            req.finish_reason = "stop"
            req.stop_reason = tok if tok in p.stop_token_ids else None
            if p.include_stop_str_in_output and p.detokenize:
                req.detok.add(tok, check_stop=False)  # the stop token's text (none for a skipped special token)
        elif p.detokenize and (hit := req.detok.add(tok, not early)) is not None:
            req.finish_reason, req.stop_reason = "stop", hit
        elif grammar is not None:  # its grammar is complete (a rejected token is never sampled under the mask)
            req.finish_reason = "stop" if grammar == "complete" else "error"
            req.error = None if grammar == "complete" else f"token {tok} does not follow the request's grammar"
        elif len(ids) - req.prompt_len >= req.max_new_tokens:  # outputs the host has seen
            req.finish_reason = "length"
        new = ids[req.prompt_len + req.emitted_tokens:]
        if req.finish_reason is not None:
            self.scheduler.remove(req, cache=req.cacheable)
            if early or req.guided:
                self._forget(req)
        return step_output(req, new)

    def _refuse(self, req: Req, error: str) -> StepOutput:
        """`req`, taken out of the engine, ends with an error."""
        self._forget(req)
        req.finish_reason, req.error = "error", error
        return step_output(req, [])

    def _forget(self, req: Req) -> None:
        """`req` is over: the per-request state of `min_tokens` and of its grammar goes."""
        self.min_tokens.done(req)
        self.guided.done(req)

    # ---- introspection ---------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Live figures for /stats and the metrics (`engine_stats`)."""
        return engine_stats(self)

    def info(self) -> dict:
        """Static facts for start-up logs and benchmark reports (`engine_info`)."""
        return engine_info(self)

    def live_pages(self) -> list[list[int]]:
        """Pages held by running requests (for leak checks)."""
        return [r.pages for r in self.scheduler.running]

    def close(self) -> None:
        """Release device memory held by the engine."""
        self.kv.close()  # finishes tier backups / L3 writes in flight
        if self.kv_events is not None:
            self.kv_events.close()  # publishes the last batch (AllBlocksCleared)
        if self.worker is not None:
            self.worker.close()  # stops the other tensor-parallel ranks
        self.worker = None  # type: ignore[assignment]
        self.guided.close()
        self.gc.close()
        if self.config.gc_freeze:
            thaw_heap()  # the closed engine's cycles become collectable again
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
