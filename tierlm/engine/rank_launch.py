"""Starting tensor-parallel ranks: the rendezvous, worker processes, and the node launcher.

Rank r runs on node `r // ranks_per_node`, device `cuda:(r % ranks_per_node)`. Node 0's engine process is
rank 0 (the controller); it starts its node's other ranks as processes, joins the torch.distributed group
at `--dist-init-addr` (NCCL on CUDA, gloo on CPU), and hands every rank a random key and the address of its
control listener over that group. Workers then connect their control channel (`RankLink`). Other nodes run
`tierlm serve --node-rank K`, which only starts that node's ranks.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

import torch

from tierlm.config import EngineConfig
from tierlm.engine.rank_link import RankLink
from tierlm.models.config import ModelConfig
from tierlm.parallel.group import TPGroup

logger = logging.getLogger(__name__)
START_TIMEOUT_S = 600.0  # a rank that has not joined by then fails the start (e.g. another node never came)


@dataclass(frozen=True)
class RankPlace:
    """Where one rank runs: its global rank, the world size, its device, and the rendezvous address."""

    rank: int
    world: int
    device: str
    init_addr: str


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def init_addr(config: EngineConfig) -> str:
    return config.dist_init_addr or f"127.0.0.1:{free_port()}"


def place(config: EngineConfig, rank: int, addr: str) -> RankPlace:
    per_node = config.tp_size // config.nnodes
    cuda = config.device != "cpu" and torch.cuda.is_available()
    return RankPlace(rank, config.tp_size, f"cuda:{rank % per_node}" if cuda else "cpu", addr)


def join_group(where: RankPlace) -> TPGroup:
    """Join the ranks' process group (blocks until all have joined)."""
    import torch.distributed as dist

    device = torch.device(where.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{where.init_addr}", world_size=where.world,
                            rank=where.rank, timeout=datetime.timedelta(seconds=START_TIMEOUT_S))
    return TPGroup(where.world, where.rank, dist.group.WORLD)


def spawn_ranks(config: EngineConfig, ranks: list[int], addr: str) -> list[subprocess.Popen]:
    """Start worker ranks as processes of this node (the launch document goes on their stdin)."""
    procs = []
    for rank in ranks:
        doc = {"config": dataclasses.asdict(config), "place": dataclasses.asdict(place(config, rank, addr)),
               "log_level": logging.getLogger("tierlm").getEffectiveLevel()}
        env = dict(os.environ)
        if place(config, rank, addr).device == "cpu":  # share the cores instead of oversubscribing them
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // config.tp_size)))
        proc = subprocess.Popen([sys.executable, "-m", "tierlm.engine.rank_main"], stdin=subprocess.PIPE, env=env)
        proc.stdin.write(json.dumps(doc).encode())
        proc.stdin.close()
        procs.append(proc)
    return procs


def controller_rendezvous(group: TPGroup, host: str) -> dict[int, Connection]:
    """Rank 0: open the control listener, tell every rank where it is and its key, accept them all."""
    import torch.distributed as dist

    key = secrets.token_bytes(32)
    listener = Listener((host, 0), authkey=key)
    dist.broadcast_object_list([key, list(listener.address)], src=0, group=group.group)
    conns: dict[int, Connection] = {}
    listener._listener._socket.settimeout(START_TIMEOUT_S)  # accept() has no timeout of its own
    try:
        while len(conns) < group.size - 1:
            conn = listener.accept()
            rank = conn.recv()
            conns[int(rank)] = conn
    except (OSError, socket.timeout) as e:
        raise RuntimeError(f"--tp-size {group.size}: only {len(conns)} of {group.size - 1} worker ranks connected "
                           f"({type(e).__name__})") from None
    finally:
        listener.close()
    return conns


def worker_rendezvous(group: TPGroup) -> Connection:
    """A worker: learn the controller's key and address over the group, connect, say who we are."""
    import torch.distributed as dist

    box: list = [None, None]
    dist.broadcast_object_list(box, src=0, group=group.group)
    key, address = box
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = Client(tuple(address), authkey=key)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    conn.send(group.rank)
    return conn


def run_node(config: EngineConfig) -> int:
    """`--node-rank K > 0`: run this node's ranks until they exit (node 0 serves and decides)."""
    per_node = config.tp_size // config.nnodes
    ranks = list(range(config.node_rank * per_node, (config.node_rank + 1) * per_node))
    logger.info("node %d of %d: starting ranks %s, meeting node 0 at %s", config.node_rank, config.nnodes, ranks,
                config.dist_init_addr)
    procs = spawn_ranks(config, ranks, config.dist_init_addr)
    failed = False
    try:
        for p in procs:
            failed = p.wait() != 0 or failed  # a rank killed by a signal has a negative status
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    return 1 if failed else 0


def start_workers(config: EngineConfig, model_dir: Path, mc: ModelConfig, max_model_len: int, max_len: int) -> Any:
    """The engine's worker: a `Worker` on one device, or under `--tp-size N` a `WorkerGroup` of this
    process's rank 0 and the other ranks (this node's started as processes here)."""
    from tierlm.engine.worker import Worker
    from tierlm.engine.worker_group import WorkerGroup

    if config.tp_size == 1:
        return Worker(config, model_dir, mc, max_model_len, max_len)
    check_shardable(config, mc)
    addr = init_addr(config)
    per_node = config.tp_size // config.nnodes
    procs = spawn_ranks(config, list(range(1, per_node)), addr)
    try:
        where = place(config, 0, addr)
        group = join_group(where)
        conns = controller_rendezvous(group, addr.rpartition(":")[0])
        links = {r: RankLink(r, c) for r, c in conns.items()}
        local = Worker(config, model_dir, mc, max_model_len, max_len, group, torch.device(where.device))
        kv_heads = group.kv_heads(mc.num_kv_heads)[0]
        logger.info("tensor parallel: %d ranks on %d node(s) (rank 0 on %s), %d of %d KV heads and %d of %d query "
                    "heads per rank, %d KV pages per rank", group.size, config.nnodes, where.device, kv_heads,
                    mc.num_kv_heads, mc.num_heads // group.size, mc.num_heads, local.pool.num_pages - 1)
        return WorkerGroup(local, links, procs)
    except BaseException:
        for p in procs:
            p.kill()
            p.wait()
        from tierlm.engine.worker_group import leave_group
        leave_group(timeout=10.0)
        raise


def check_shardable(config: EngineConfig, mc: ModelConfig) -> None:
    """Refuse a model that cannot be split over `--tp-size` ranks before any rank starts."""
    from tierlm.models.registry import model_class

    if not getattr(model_class(mc.architecture), "tensor_parallel", False):
        raise ValueError(f"--tp-size {config.tp_size}: {mc.architecture} cannot be served tensor parallel yet "
                         "(Llama, Mistral, Qwen2 and Qwen3 can)")
    tp = TPGroup(config.tp_size, 0)
    tp.split(mc.num_heads, "the number of attention heads")
    tp.split(mc.intermediate_size, "the MLP intermediate size")
    tp.kv_heads(mc.num_kv_heads)
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        if torch.cuda.device_count() < config.tp_size // config.nnodes:
            raise ValueError(f"--tp-size {config.tp_size}: this node has {torch.cuda.device_count()} CUDA devices, "
                             f"{config.tp_size // config.nnodes} are needed")
