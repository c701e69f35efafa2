"""`FanOutStore` / `join_futures` (`tierlm.engine.fan_out`): the controller's view of every rank's store calls
and copies."""
from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest

from tierlm.engine.fan_out import FanOutStore, join_futures


class FakeLink:
    """A worker rank whose replies the test completes by hand."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.futures: list[cf.Future] = []
        self._made = threading.Condition()

    def call(self, op: str, *args) -> cf.Future:
        fut: cf.Future = cf.Future()
        with self._made:
            self.calls.append((op, *args))
            self.futures.append(fut)
            self._made.notify_all()
        return fut

    def future(self, i: int, timeout: float = 5.0) -> cf.Future:
        """The future of this rank's `i`-th call, once the thread under test has made it."""
        with self._made:
            assert self._made.wait_for(lambda: len(self.futures) > i, timeout), f"call {i} never made"
            return self.futures[i]


class LocalStore:
    def __init__(self, get=None, exists=3, error=None) -> None:
        self.get, self.exists, self.error = get, exists, error

    def batch_get(self, keys, pages):
        if self.error:
            raise self.error
        return list(self.get)

    def batch_exists(self, keys):
        return self.exists

    def batch_set(self, keys, pages):
        return [True] * len(keys)

    def stats(self):
        return {}


def test_a_page_counts_only_where_every_rank_read_it():
    link = FakeLink()
    store = FanOutStore(LocalStore(get=[True, True, True]), [link])
    out: list = []
    t = threading.Thread(target=lambda: out.append(store.batch_get(["a", "b", "c"], [0, 1, 2])))
    t.start()
    link.future(0).set_result([True, False, True])
    t.join(5)
    assert out == [[True, False, True]]


def test_a_failed_rank_makes_the_call_a_miss_and_is_counted():
    link = FakeLink()
    store = FanOutStore(LocalStore(get=[True, True], exists=2), [link])
    t = threading.Thread(target=lambda: out.append(store.batch_get(["a", "b"], [0, 1])))
    out: list = []
    t.start()
    link.future(0).set_exception(ConnectionError("rank 1 store down"))
    t.join(5)
    assert out == [[False, False]] and store.rank_errors == 1
    t2 = threading.Thread(target=lambda: out.append(store.batch_exists(["a", "b"])))
    t2.start()
    link.future(1).set_result(1)
    t2.join(5)
    assert out[-1] == 1  # the fewest leading pages any rank holds


def test_a_local_error_is_raised_only_after_every_rank_stopped_writing():
    link = FakeLink()
    store = FanOutStore(LocalStore(error=OSError("local read failed")), [link])
    raised: list = []

    def run() -> None:
        try:
            store.batch_get(["a"], [0])
        except OSError as e:
            raised.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(0.3)
    assert t.is_alive(), "returned while rank 1 may still write the host pages"
    link.future(0).set_result([True])
    t.join(5)
    assert raised and "local read failed" in str(raised[0])


def test_join_futures_waits_for_all_and_keeps_the_first_error():
    parts = [cf.Future() for _ in range(3)]
    dst: cf.Future = cf.Future()
    join_futures(dst, parts, lambda results: sum(results))
    parts[0].set_result(1)
    parts[2].set_result(2)
    assert not dst.done()
    parts[1].set_result(3)
    assert dst.result() == 6
    parts = [cf.Future() for _ in range(2)]
    dst = cf.Future()
    join_futures(dst, parts, lambda results: None)
    parts[1].set_exception(RuntimeError("rank 1: copy failed"))
    parts[0].set_result(None)
    with pytest.raises(RuntimeError, match="rank 1: copy failed"):
        dst.result()
