"""`Watchdog`: exits the engine process when a step runs past `--watchdog-timeout`, or when a rank is gone and
the engine does not stop by itself."""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Optional

from tierlm.server.watchdog import Watchdog


class Engine:
    def __init__(self) -> None:
        self.gone: Optional[str] = None

    def lost(self) -> Optional[str]:
        return self.gone


def _wait_for(codes: list, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not codes and time.monotonic() < deadline:
        time.sleep(0.02)


def test_exits_once_a_rank_has_been_gone_for_the_grace():
    engine, loop, codes = Engine(), SimpleNamespace(step_started=None), []
    watch = Watchdog(engine, loop, 0, watch_ranks=True, lost_grace_s=0.3, poll_s=0.02,
                     hard_exit=codes.append).start()
    try:
        time.sleep(0.2)
        assert codes == []  # nothing lost: it only watches
        engine.gone = "rank 1: the control channel closed (EOFError)"
        time.sleep(0.15)
        assert codes == []  # within the grace the engine loop may still stop by itself
        _wait_for(codes)
        assert codes == [1]
        time.sleep(0.1)
        assert codes == [1]  # once
    finally:
        watch.stop()


def test_a_stopped_watch_never_exits():
    engine, codes = Engine(), []
    watch = Watchdog(engine, SimpleNamespace(step_started=None), 0.05, watch_ranks=True, lost_grace_s=0.05,
                     poll_s=0.02, hard_exit=codes.append).start()
    watch.stop()  # the process cleaned up in time
    engine.gone = "rank 1: gone"
    watch.loop.step_started = time.monotonic() - 10
    time.sleep(0.2)
    assert codes == [] and not watch._thread.is_alive()


def test_exits_when_one_step_runs_past_the_timeout():
    engine, loop, codes = Engine(), SimpleNamespace(step_started=None), []
    watch = Watchdog(engine, loop, 0.4, watch_ranks=False, poll_s=0.02, hard_exit=codes.append).start()
    try:
        for _ in range(10):  # many steps, each under the bound: their total is not what counts
            loop.step_started = time.monotonic()
            time.sleep(0.1)
            loop.step_started = None
        time.sleep(0.5)  # idle between steps, however long, is not a step
        assert codes == []
        loop.step_started = time.monotonic()
        _wait_for(codes)
        assert codes == [1]
        assert 0.4 <= time.monotonic() - loop.step_started < 2.0
    finally:
        watch.stop()


def test_the_reasons_name_the_flag_and_the_rank():
    engine, loop = Engine(), SimpleNamespace(step_started=None)
    watch = Watchdog(engine, loop, 300, watch_ranks=True, lost_grace_s=30)
    assert watch.check(1000.0) is None
    loop.step_started = 600.0
    assert "over --watchdog-timeout 300" in watch.check(1000.0)
    loop.step_started = None
    engine.gone = "rank 1: the control channel closed"
    assert watch.check(1000.0) is None  # first seen now
    assert watch.check(1029.0) is None
    assert "rank 1: the control channel closed" in watch.check(1030.0)
    engine.gone = None
    assert watch.check(1031.0) is None  # a loss no longer reported starts over


def test_nothing_to_watch_starts_no_thread():
    watch = Watchdog(Engine(), SimpleNamespace(step_started=None), 0, watch_ranks=False).start()
    assert watch._thread is None
    watch.stop()


def test_the_bound_by_default_is_300_s_on_a_gpu_and_none_on_the_cpu():
    from tierlm.config import EngineConfig
    from tierlm.server.engine_proc import step_timeout

    unset, set_ = EngineConfig(model="m"), EngineConfig(model="m", watchdog_timeout=7.0)
    for device, want in (("cuda:0", 300.0), ("cpu", 0.0)):
        engine = SimpleNamespace(device=device)
        assert step_timeout(unset, engine) == want and step_timeout(set_, engine) == 7.0
    assert step_timeout(EngineConfig(model="m", watchdog_timeout=0.0), SimpleNamespace(device="cuda:0")) == 0.0
