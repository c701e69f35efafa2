"""`WorkerGroup`: the controller's handle on every tensor-parallel rank, shaped like one `Worker`.

Rank 0's own worker runs in this process; the others get each step plan (and each tier operation the
controller starts outside a plan) over their `RankLink`, in order. Completions come back as replies and are
joined into the controller's futures: a backup is done when every rank's copy is; an L3 read counts a page
only when every rank read its part of it, so a fetch that fails or stalls on one rank is recomputed on all
of them and no rank ever mixes cached and recomputed KV. The sampled tokens go to the workers by a broadcast
in the forward's own order; no collective sits on the cache control path.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from typing import Any, Optional, Sequence

import torch

from tierlm.engine.fan_out import FanOutIO, FanOutStore
from tierlm.engine.model_runner import SampleSites
from tierlm.engine.plan import StepPlan
from tierlm.engine.prompt_logprobs import Scores
from tierlm.engine.rank_link import RankLink
from tierlm.engine.worker import Worker
from tierlm.kvcache.req_table import TokenSink
from tierlm.kvcache.tier_io import Ticket

logger = logging.getLogger(__name__)


class WorkerGroup:
    """Rank 0's `Worker` plus links to the other ranks; `Engine` drives it exactly like a single worker."""

    def __init__(self, local: Worker, links: dict[int, RankLink], procs: Sequence[Any] = ()) -> None:
        self.local = local
        self.links = [links[r] for r in sorted(links)]
        self.procs = list(procs)
        self.tp = local.tp
        self.device, self.pool, self.layout = local.device, local.pool, local.layout
        self.runner, self.tables = local.runner, local.tables
        self.io: Optional[FanOutIO] = None
        self._asked: list[Optional[cf.Future]] = [None] * len(self.links)  # outstanding "stats" calls
        self._latest: dict[int, dict] = {}

    @property
    def host(self) -> Any:
        return self.local.host

    def attach_tiers(self, host_pages: int, io_backend: str, store: Any = None, threads: bool = True,
                     store_url: Optional[str] = None) -> FanOutIO:
        """Host pools and copy executors on every rank; each rank opens its own shard of the L3 store."""
        replies = [link.call("attach", host_pages, io_backend, store_url) for link in self.links]
        local_io = self.local.attach_tiers(host_pages, io_backend, store, threads)
        for f in replies:
            f.result()  # a rank that cannot open its store fails the start, naming the reason
        fan_store = FanOutStore(store, self.links) if store is not None else None
        self.io = FanOutIO(local_io, self.links, fan_store)
        return self.io

    def execute(self, plan: StepPlan, tickets: Optional[Sequence[Ticket]] = None
                ) -> Optional[tuple[torch.Tensor, SampleSites, Optional[Scores]]]:
        """Send the plan to every rank, then run it here; backups complete when all ranks' have."""
        local_tickets, ids = [], []
        for i in range(len(plan.backups)):
            ticket = tickets[i] if tickets is not None else Ticket()
            if self.io is None:
                local_tickets.append(ticket)
                continue
            local, rids = self.io.fan_ticket(ticket)
            local_tickets.append(local)
            ids.append(rids)
        data = plan.to_bytes()
        for r, link in enumerate(self.links):
            link.post("plan", data, [list(per_rank[r]) for per_rank in ids])
        return self.local.execute(plan, local_tickets)

    def keep_warm(self) -> bool:
        """Every rank runs its tiny kernel (`Worker.keep_warm`); the others get it in order with the plans."""
        if self.device.type != "cuda":
            return False
        for link in self.links:
            link.post("warm")
        return self.local.keep_warm()

    def token_sink(self, sites: SampleSites) -> TokenSink:
        """This rank's sink (`Worker.token_sink`); `share_tokens` gives the tokens to the other ranks."""
        return self.local.token_sink(sites)

    def share_tokens(self, tokens: torch.Tensor) -> None:
        """Give every other rank the sampled tokens (int64, a broadcast in step order): each stores them in its
        own token table."""
        self.tp.broadcast(tokens)

    def tier_figures(self) -> dict:
        return self.local.tier_figures()

    def rank_figures(self, wait: bool = False, timeout: float = 5.0) -> list[dict]:
        """Every rank's own tier figures. Worker ranks answer in step order, so by default this never waits:
        it returns each rank's latest answer and asks for a fresh one (`wait=True` waits for it)."""
        for r, link in enumerate(self.links):
            if self._asked[r] is None or self._asked[r].done():
                self._asked[r] = link.call("stats")
        if wait:
            cf.wait(self._asked, timeout=timeout)
        out = [{"rank": 0, **self.local.tier_figures()}]
        for r, fut in enumerate(self._asked, start=1):
            if fut.done():
                try:
                    self._latest[r] = fut.result()
                except Exception as e:  # noqa: BLE001 - a lost rank reports only that
                    self._latest[r] = {"error": f"{type(e).__name__}: {e}"}
            out.append({"rank": r, **self._latest.get(r, {"state": "no report yet"})})
        return out

    def lost(self, grace_s: float = 0.0) -> Optional[str]:
        """Why a worker rank is gone (its control channel broke), or None: with one rank lost no step can run
        again, since every forward needs every rank. `grace_s`: after a failed step, how long to wait for a
        link to notice (a collective can fail on a dead peer a moment before the link's reader sees it close)."""
        deadline = time.monotonic() + grace_s
        while True:
            why = next((link.lost for link in self.links if link.lost is not None), None)
            if why is not None or time.monotonic() >= deadline:
                return why
            time.sleep(0.01)

    def close(self, timeout: float = 60.0) -> None:
        """Flush and stop the worker ranks, then leave the process group (every rank leaves it at the same
        time: NCCL's teardown waits for the peers, so waiting for the processes first would never end)."""
        futures = [link.call("close") for link in self.links]
        cf.wait(futures, timeout=timeout)
        for link in self.links:
            link.close()
        self.local.release_graphs()
        leave_group(timeout=10.0)
        for p in self.procs:
            try:
                p.wait(timeout=timeout)
            except Exception:  # noqa: BLE001 - a rank that does not stop is killed
                p.kill()
                p.wait()


def leave_group(timeout: float) -> None:
    """Destroy this process's torch.distributed group, giving up after `timeout` seconds (a peer that died
    can leave NCCL's teardown waiting forever; the process exits regardless)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    done = threading.Thread(target=dist.destroy_process_group, name="tierlm-leave-group", daemon=True)
    done.start()
    done.join(timeout)
    if done.is_alive():
        logger.warning("leaving the tensor-parallel group timed out after %.0f s", timeout)
