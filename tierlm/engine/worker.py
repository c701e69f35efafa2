"""`Worker`: executes step plans on one device — the model runner, the device KV pool, the request tables,
the host pool and the copy executor of the tiers all live here.

It decides nothing: every page id, table entry and copy comes in a `StepPlan` from the controller. One
process drives its worker directly; under tensor parallelism each rank's worker executes the same plan on
its own shard.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from tierlm.config import EngineConfig
from tierlm.engine.model_runner import ModelRunner, SampleSites
from tierlm.engine.plan import StepPlan
from tierlm.engine.prompt_logprobs import Scores
from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.req_table import ReqToTokenTable, TokenSink
from tierlm.kvcache.tier_io import Ticket, TierIO
from tierlm.kvcache.transfer import PageTransfer
from tierlm.models.config import ModelConfig
from tierlm.parallel.group import TPGroup
from tierlm.utils.upload import upload


class Worker:
    """Model, KV pools and copies of one device; `execute(plan)` runs one step and returns the logits of
    its sampling sites."""

    def __init__(self, config: EngineConfig, model_dir: Path, model_cfg: ModelConfig, max_model_len: int,
                 max_len: int, tp: TPGroup = TPGroup(), device: Optional[torch.device] = None) -> None:
        self.tp = tp
        self.runner = ModelRunner(config, model_dir, model_cfg, max_model_len, tp, device)
        self.device = self.runner.device
        self.pool = self.runner.pool
        self.layout = self.runner.layout
        self.tables = ReqToTokenTable(config.max_running_requests, max_len, self.device)
        self.runner.make_attention(self.tables.table, self.tables.token_ids)
        self.host: Optional[HostKVPool] = None
        self.io: Optional[TierIO] = None
        self._warm: Optional[torch.Tensor] = None  # keep_warm's one-element operand, made on first use

    def attach_tiers(self, host_pages: int, io_backend: str, store: Any = None, threads: bool = True,
                     store_url: Optional[str] = None) -> TierIO:
        """Create the host pool and the copy executor (and give the L3 store its host pages). `store_url` is
        what other ranks would open (a `WorkerGroup` uses it); one device has `store` already open."""
        self.host = HostKVPool(host_pages, self.layout, self.pool.page_size, pin=self.device.type == "cuda")
        if store is not None:
            store.attach(self.host)
        self.io = TierIO(PageTransfer(self.pool, self.host, io_backend), store, threads)
        return self.io

    def execute(self, plan: StepPlan, tickets: Optional[Sequence[Ticket]] = None
                ) -> Optional[tuple[torch.Tensor, SampleSites, Optional[Scores]]]:
        """Run the plan's copies, then its forward; returns (logits of the sampling sites, the sites, the prompt
        logprobs of `plan.score_index` or None) or None without a forward. `tickets[i]` is completed by backup i
        (fresh ones when not given). With `plan.fence` >= 0 the forward and the loads start only once the backups
        numbered up to it (queued by earlier plans) have copied (on the device: the host does not wait). The plan's
        backups are queued after its forward: they copy pages that forward does not write, and they follow on the
        device only the work queued before it, so the host's work of queueing them (a wave's finished prompts: a
        thousand pages) runs while the device computes instead of before it."""
        if self.io is None:
            if plan.backups or plan.load_host:
                raise RuntimeError("a plan with tier copies reached a worker without tiers")
            return self._forward(plan, None)
        # the backups of earlier plans (not this one's): pages this plan writes or loads may be theirs
        fence = self.io.backups_fence(plan.fence) if plan.fence >= 0 else None
        mark = (torch.cuda.current_stream(self.device).record_event()
                if plan.backups and self.io.ordered_copies else None)
        try:
            if fence is not None:
                torch.cuda.current_stream(self.device).wait_event(fence)
            overlap = plan.num_tokens if plan.mode == "prefill" else 0
            loads = self.io.load(plan.load_host, plan.load_device, overlap, fence)
            if loads is not None and not (plan.has_forward and plan.mode == "prefill"):
                loads.wait_all()  # no layer-wise consumer: the compute stream waits for all of it
                loads = None
            return self._forward(plan, loads)
        finally:  # queued even if the forward failed: every ticket completes
            for i, (dev, host, keys) in enumerate(plan.backups):
                ticket = tickets[i] if tickets is not None else Ticket()
                if plan.backup_seq >= 0:  # the controller's numbers (another rank's tickets come unnumbered)
                    ticket.seq = plan.backup_seq + i
                self.io.backup(dev, host, keys, ticket, mark)

    def _forward(self, plan: StepPlan, loads: Any
                 ) -> Optional[tuple[torch.Tensor, SampleSites, Optional[Scores]]]:
        if not plan.has_forward:
            return None
        batch, sites = self.runner.build_batch(plan, self.tables)
        attn = self.runner.attn
        attn.kv_loads = loads
        scoring = None
        if plan.score_index:  # prompt logprobs: rare, so their indices are not in the pass's packed upload
            scoring = (upload(plan.score_index, torch.int64, self.device),
                       upload(plan.score_targets, torch.int64, self.device), plan.score_top)
        try:
            logits, scores = self.runner.forward(batch, sites, scoring)
        finally:
            attn.kv_loads = None
        return logits, sites, scores

    def keep_warm(self) -> bool:
        """Run one tiny kernel on the compute stream and wait for it; False (and nothing run) off CUDA. After some
        tens of milliseconds without work the launch path (driver and device) takes longer to launch and finish
        the next step's work; a kernel every few milliseconds removes most of that (not the host's own wake-up)."""
        if self.device.type != "cuda":
            return False
        if self._warm is None:
            self._warm = torch.zeros(1, device=self.device)
        self._warm.neg_()  # in place and bounded: the value only flips sign
        torch.cuda.current_stream(self.device).synchronize()
        return True

    def token_sink(self, sites: SampleSites) -> TokenSink:
        """Where the sampler writes a pass's tokens (the token table at the pass's sites: the next decode step
        reads its inputs there)."""
        return self.tables.token_sink(sites.rows, sites.positions)

    def share_tokens(self, tokens: torch.Tensor) -> None:
        """Nothing on one device: the sampler wrote the tokens through `token_sink` (a `WorkerGroup` sends them to
        its other ranks here)."""

    def store_tokens(self, sites: SampleSites, tokens: torch.Tensor) -> None:
        """Write sampled tokens into the device token table (the next decode step reads its inputs there)."""
        self.tables.write_tokens(sites.rows, sites.positions, tokens)

    def lost(self, grace_s: float = 0.0) -> Optional[str]:
        """None, at once: one device has no other rank to lose (a `WorkerGroup` names a rank that is gone)."""
        return None

    def close(self) -> None:
        """Nothing to stop on one device (a `WorkerGroup` stops its other ranks here)."""

    def release_graphs(self) -> None:
        """Drop the captured decode graphs and let the device finish: graphs that captured collectives hold
        the communicator, whose teardown would otherwise wait for them."""
        self.runner.graphs = self.runner.pieces = None
        import gc
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def tier_figures(self) -> dict:
        """This device's own tier figures (per rank under tensor parallelism)."""
        out: dict = {"device": str(self.device), "kv_pool_pages": self.pool.num_pages - 1,
                     "kv_pool_bytes": self.pool.nbytes, "kv_heads": self.runner.num_kv_heads}
        if self.io is not None:
            out.update(host_pages=self.host.num_pages, host_bytes=self.host.nbytes, io_errors=self.io.store_errors,
                       dropped_write_pages=self.io.l3_dropped_pages, io_idle=self.io.idle())
            if self.io.store is not None:
                out["store"] = self.io.store.stats()
        return out
