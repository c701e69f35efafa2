"""A worker rank's process: join the ranks, load this rank's shard, then execute what the controller sends.

Started by the controller (`python -m tierlm.engine.rank_main`, the launch document on stdin), or by a
node's launcher for the ranks of another node. The loop handles one message at a time in the order sent,
so plans, backups and loads reach the device in the controller's order; store calls run on the tier
threads and answer when done. It decides nothing about caches.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from typing import Any

import torch

from tierlm.config import EngineConfig
from tierlm.engine.gc_watch import freeze_heap
from tierlm.engine.plan import StepPlan
from tierlm.engine.rank_launch import RankPlace, join_group, worker_rendezvous
from tierlm.engine.rank_link import ReplySender, unpack
from tierlm.engine.worker import Worker
from tierlm.engine.worker_group import leave_group
from tierlm.kvcache.tier_io import Ticket
from tierlm.utils.process import die_with_parent, stacks_on_sigusr1

logger = logging.getLogger(__name__)


def _ticket(replies: ReplySender, copy_id: int, stored_id: int) -> Ticket:
    """A local backup ticket whose completions are reported to the controller."""
    ticket = Ticket()
    replies.reply_future(copy_id, ticket.copy, convert=lambda _: None)
    replies.reply_future(stored_id, ticket.stored, convert=lambda r: None if r is None else bool(r))
    return ticket


class RankLoop:
    """Executes the controller's messages on this rank's `Worker`."""

    def __init__(self, worker: Worker, conn: Any, open_store: Any) -> None:
        self.worker, self.conn = worker, conn
        self.replies = ReplySender(conn)
        self.open_store = open_store  # url -> this rank's shard of the L3 store

    def run(self) -> int:
        """Serve until the controller says close (0) or is gone without a word (1: the process died, its node went
        away), the exit status of the rank and of a node's `tierlm serve --node-rank K`, for a supervisor to see."""
        while True:
            try:
                msg = unpack(self.conn.recv_bytes())
            except (EOFError, OSError):
                logger.error("rank %d: the controller is gone; exiting", self.worker.tp.rank)
                return 1
            if not self.handle(msg):
                return 0

    def _flush(self, rid: int) -> None:
        """Reply once every copy and store call posted before the request has finished."""
        self.worker.io.transfer.wait_loads()
        self.worker.io.wait()
        self.replies.reply(rid, True)

    def handle(self, msg: list) -> bool:
        """Execute one message; False after `close`."""
        op, w = msg[0], self.worker
        if op == "plan":
            _, data, ids = msg
            plan = StepPlan.from_bytes(data)
            result = w.execute(plan, [_ticket(self.replies, c, s) for c, s in ids])
            if result is not None and plan.num_sites:  # the controller samples; the tokens come to us
                tokens = torch.empty(plan.num_sites, dtype=torch.int64, device=w.device)  # as sampled
                w.tp.broadcast(tokens)
                w.store_tokens(result[1], tokens)
        elif op == "warm":
            w.keep_warm()
        elif op == "backup":
            _, dev, host, keys, (copy_id, stored_id), seq = msg
            ticket = _ticket(self.replies, copy_id, stored_id)
            ticket.seq = seq  # the controller's number, which later plans' fences name
            w.io.backup(dev, host, keys, ticket)
        elif op == "load":
            _, host, dev = msg
            loads = w.io.load(host, dev)
            if loads is not None:
                loads.wait_all()
        elif op == "wait":  # on a thread of its own: a stalled store call must not stop the plans behind it
            threading.Thread(target=self._flush, args=(msg[1],), name="tierlm-rank-flush", daemon=True).start()
        elif op == "store":
            _, rid, name, args = msg
            fn = getattr(w.io.store, name)
            self.replies.reply_future(rid, w.io.submit_store(fn, *args))
        elif op == "attach":
            _, rid, host_pages, backend, store_url = msg
            try:
                store = self.open_store(store_url) if store_url else None
                w.attach_tiers(host_pages, backend, store)
                self.replies.reply(rid, True, w.tier_figures())
            except Exception as e:  # noqa: BLE001 - reported to the controller, which fails the start
                self.replies.reply(rid, False, f"{type(e).__name__}: {e}")
        elif op == "stats":
            self.replies.reply(msg[1], True, w.tier_figures())
        elif op == "close":
            if w.io is not None:
                w.io.close()
                if w.io.store is not None:
                    w.io.store.close()
            self.replies.reply(msg[1], True)
            return False
        else:
            logger.error("rank %d: unknown message %r", w.tp.rank, op)
        return True


def run_worker_rank(doc: dict) -> int:
    """Join the ranks as the rank the launch document names, load its shard, serve the controller."""
    from tierlm.engine.worker import Worker
    from tierlm.kvcache.stores import open_store
    from tierlm.kvcache.stores.shard import ShardKVStore
    from tierlm.models.config import ModelConfig
    from tierlm.models.loader import resolve_model_dir

    where = RankPlace(**doc["place"])
    logging.basicConfig(level=doc.get("log_level", logging.INFO),
                        format=f"%(asctime)s rank{where.rank} %(levelname)s %(name)s: %(message)s")
    config = EngineConfig(**doc["config"])
    group = join_group(where)
    conn = worker_rendezvous(group)
    try:
        model_dir = resolve_model_dir(config.model, config.revision, need_weights=config.load_format != "dummy")
        mc = ModelConfig.from_dir(model_dir)
        max_model_len = mc.context_limit(config.max_model_len)
        worker = Worker(config, model_dir, mc, max_model_len, max_model_len + config.page_size, group,
                        torch.device(where.device))
        shard = group.shard_name(mc.num_kv_heads)

        def shard_store(url: str) -> ShardKVStore:
            return ShardKVStore(open_store(url, int(config.kv_store_max_gb * 2**30), config.kv_store_timeout), shard)

        if config.gc_freeze:
            freeze_heap()  # collections while serving skip what start-up built (`tierlm.engine.gc_watch`)
        status = RankLoop(worker, conn, shard_store).run()
        worker.release_graphs()
    finally:
        conn.close()
        leave_group(timeout=10.0)
    return status


def main() -> int:
    die_with_parent()  # the engine (or node launcher) that started this rank is gone: so is the rank
    stacks_on_sigusr1()
    doc = json.loads(sys.stdin.read())
    return run_worker_rank(doc)


if __name__ == "__main__":
    sys.exit(main())
