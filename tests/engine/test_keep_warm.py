"""`keep_warm` down the stack: the engine's worker runs its tiny kernel only on CUDA, a `WorkerGroup` passes it to
every rank in order with the plans, a rank's loop runs it on its worker; on CUDA the outputs stay the same."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.conftest import CPU_OPTS
from tierlm.config import EngineConfig
from tierlm.engine.engine import Engine
from tierlm.engine.rank_main import RankLoop
from tierlm.engine.worker_group import WorkerGroup
from tierlm.sampling_params import SamplingParams


class Local:
    """Rank 0's worker as `WorkerGroup` sees it."""

    def __init__(self, device: str) -> None:
        self.tp, self.device = None, torch.device(device)
        self.pool = self.layout = self.runner = self.tables = None
        self.warmed = 0

    def keep_warm(self) -> bool:
        self.warmed += 1
        return True


class Link:
    def __init__(self) -> None:
        self.posted: list[tuple] = []

    def post(self, *msg) -> None:
        self.posted.append(msg)


def test_a_cpu_engine_has_nothing_to_keep_warm(tiny_qwen3):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **CPU_OPTS))
    try:
        assert engine.keep_warm() is False
        assert engine.worker._warm is None  # nothing allocated, nothing launched
    finally:
        engine.close()


@pytest.mark.parametrize("device, posted, answer", [("cuda", [("warm",)], True), ("cpu", [], False)])
def test_a_group_asks_every_rank_on_cuda_only(device, posted, answer):
    local, links = Local(device), {1: Link(), 2: Link()}
    group = WorkerGroup(local, links)
    assert group.keep_warm() is answer
    assert [link.posted for link in links.values()] == [posted, posted]
    assert local.warmed == (1 if answer else 0)


def test_a_rank_loop_runs_it_on_its_worker():
    worker = SimpleNamespace(calls=0)
    worker.keep_warm = lambda: setattr(worker, "calls", worker.calls + 1) or True
    loop = RankLoop(worker, conn=None, open_store=None)
    assert loop.handle(["warm"]) is True and worker.calls == 1  # True: the loop goes on


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_keep_warm_between_requests_changes_no_token(tiny_qwen3):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), device="cuda"))
    try:
        params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, detokenize=False)

        def run(rid: str) -> list[int]:
            engine.add_request(rid, [3, 4, 5, 6], params)
            out: list[int] = []
            while engine.has_unfinished():
                out += [t for o in engine.step() for t in o.new_token_ids]
            return out
        first = run("a")
        assert all(engine.keep_warm() for _ in range(5))
        assert run("b") == first
    finally:
        engine.close()
