"""Host pages of a stopped fetch are freed only once the fetch has ended, and never twice."""
from __future__ import annotations

import concurrent.futures as cf
import threading

from tierlm.kvcache.graveyard import FetchGraveyard


def test_pages_wait_for_their_fetch():
    freed: list[int] = []
    yard = FetchGraveyard(freed.extend)
    done = cf.Future()
    done.set_result(None)
    yard.bury(done, [1, 2])
    assert freed == [1, 2] and yard.held_pages == []
    running = cf.Future()
    yard.bury(running, [3])
    yard.reap()
    assert freed == [1, 2] and yard.held_pages == [3]
    running.set_exception(OSError("store gone"))  # a failed fetch has ended too
    yard.reap()
    yard.reap()
    assert freed == [1, 2, 3] and yard.held_pages == []


def test_wait_all_blocks_until_the_fetches_end():
    freed: list[int] = []
    yard = FetchGraveyard(freed.extend)
    with cf.ThreadPoolExecutor(1) as pool:
        gate = threading.Event()
        yard.bury(pool.submit(gate.wait), [7, 8])
        threading.Timer(0.05, gate.set).start()
        yard.wait_all()
    assert freed == [7, 8] and yard.held_pages == []
