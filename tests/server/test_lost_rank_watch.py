"""`LostRankWatch`: exits the engine process when a rank is gone and the engine does not stop by itself."""
from __future__ import annotations

import time
from typing import Optional

from tierlm.server.lost_rank_watch import LostRankWatch


class Engine:
    def __init__(self) -> None:
        self.gone: Optional[str] = None

    def lost(self) -> Optional[str]:
        return self.gone


def test_exits_once_a_rank_has_been_gone_for_the_grace():
    engine, codes = Engine(), []
    watch = LostRankWatch(engine, grace_s=0.3, poll_s=0.02, hard_exit=codes.append).start()
    try:
        time.sleep(0.2)
        assert codes == []  # nothing lost: it only watches
        engine.gone = "rank 1: the control channel closed (EOFError)"
        time.sleep(0.15)
        assert codes == []  # within the grace the engine loop may still stop by itself
        deadline = time.monotonic() + 3
        while not codes and time.monotonic() < deadline:
            time.sleep(0.02)
        assert codes == [1]
        time.sleep(0.1)
        assert codes == [1]  # once
    finally:
        watch.stop()


def test_a_stopped_watch_never_exits():
    engine, codes = Engine(), []
    watch = LostRankWatch(engine, grace_s=0.05, poll_s=0.02, hard_exit=codes.append).start()
    watch.stop()  # the process cleaned up in time
    engine.gone = "rank 1: gone"
    time.sleep(0.2)
    assert codes == [] and not watch._thread.is_alive()
