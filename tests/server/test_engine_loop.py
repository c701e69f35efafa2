"""The engine process loop on a fake engine (no model, no HTTP): admission bound -> 503, refusals -> 400/413,
abort, stats, malformed messages, a failing step, a lost rank, the step's timing, shutdown, keeping the device
warm while idle."""
from __future__ import annotations

import threading
import time
from typing import Optional

import pytest
import zmq

from tierlm.engine.errors import PromptTooLongError, RequestError
from tierlm.engine.outputs import StepOutput
from tierlm.sampling_params import SamplingParams
from tierlm.server import wire
from tierlm.server.engine_proc import EngineLoop


class FakeEngine:
    """One token per step per running request; request ids starting with 'boom' make `step` raise."""

    def __init__(self, max_running: int = 1):
        self.max_running = max_running
        self.waiting: list[tuple[str, list[int], SamplingParams]] = []
        self.running: dict[str, list] = {}
        self.pending: list[StepOutput] = []
        self.aborted: list[str] = []
        self.stats_calls = 0
        self.gone: Optional[str] = None  # what `lost` answers (a tensor-parallel rank that died)

    def add_request(self, rid: str, ids: list[int], p: SamplingParams) -> None:
        if not ids:
            raise RequestError("prompt is empty")
        if len(ids) > 8:
            raise PromptTooLongError(f"prompt has {len(ids)} tokens; the context limit is 8 tokens")
        self.waiting.append((rid, ids, p))

    def abort_request(self, rid: str) -> None:
        found = self.running.pop(rid, None) is not None or any(w[0] == rid for w in self.waiting)
        self.waiting = [w for w in self.waiting if w[0] != rid]
        if found:
            self.aborted.append(rid)
            self.pending.append(StepOutput(rid, [], "", None, True, "abort", 1, 0, 0))

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.pending)

    def step(self) -> list[StepOutput]:
        while self.waiting and len(self.running) < self.max_running:
            rid, ids, p = self.waiting.pop(0)
            self.running[rid] = [ids, p, 0]
        if any(rid.startswith("boom") for rid in self.running):
            raise RuntimeError("kaboom")
        outs, self.pending = self.pending, []
        for rid, st in list(self.running.items()):
            st[2] += 1
            done = st[2] >= st[1].max_tokens
            outs.append(StepOutput(rid, [st[2]], "x", None, done, "length" if done else None, len(st[0]), 0, st[2]))
            if done:
                del self.running[rid]
        return outs

    def stats(self) -> dict:
        self.stats_calls += 1
        return {"num_running": len(self.running), "num_waiting": len(self.waiting)}

    def num_waiting(self) -> int:
        return len(self.waiting)

    def lost(self, grace_s: float = 0.0) -> Optional[str]:
        return self.gone


class Harness:
    def __init__(self, engine: FakeEngine, max_waiting: int, keep_warm_s: float = 0.0):
        self.ctx = zmq.Context()
        self.push = self.ctx.socket(zmq.PUSH)
        self.pull = self.ctx.socket(zmq.PULL)
        recv, send = self.ctx.socket(zmq.PULL), self.ctx.socket(zmq.PUSH)
        recv.bind("inproc://req")
        send.bind("inproc://out")
        self.push.connect("inproc://req")
        self.pull.connect("inproc://out")
        self.loop = EngineLoop(engine, recv, send, max_waiting, keep_warm_s=keep_warm_s)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()
        self.sockets = (recv, send)

    def send(self, msg: dict) -> None:
        self.push.send(wire.pack(msg))

    def recv(self, timeout_ms: int = 5000) -> Optional[dict]:
        return wire.unpack(self.pull.recv()) if self.pull.poll(timeout_ms) else None

    def close(self) -> None:
        self.send({"t": wire.SHUTDOWN})
        self.thread.join(10)
        for s in (self.push, self.pull, *self.sockets):
            s.close(linger=0)
        self.ctx.term()


def add(rid: str, ids: list[int], max_tokens: int = 2) -> dict:
    return wire.add_msg(rid, ids, SamplingParams(max_tokens=max_tokens))


def drain(h: Harness, until_finished: set[str]) -> dict[str, list]:
    seen: dict[str, list] = {}
    while until_finished - {r for r, v in seen.items() if v and v[-1] is True}:
        msg = h.recv()
        assert msg is not None, f"no output for {until_finished}"
        if msg["t"] == wire.REJECT:
            seen.setdefault(msg["rid"], []).extend([msg["status"], True])
        for row in msg.get("outs", []):
            out = wire.row_to_output(row)
            seen.setdefault(out.request_id, []).extend([out.finish_reason, out.finished])
    return seen


@pytest.fixture
def harness():
    h = Harness(FakeEngine(max_running=1), max_waiting=2)
    yield h
    h.close()


def test_bounded_queue_and_refusals(harness):
    harness.send(add("empty", []))
    harness.send(add("long", list(range(20))))
    assert drain(harness, {"empty", "long"}) == {"empty": [400, True], "long": [413, True]}
    rids = [f"r{i}" for i in range(4)]
    for rid in rids:  # never finish on their own: 1 running + 2 waiting at most, the rest is refused
        harness.send(add(rid, [1, 2], max_tokens=10**6))
    # which of them are refused depends on whether a step admitted r0 in between (r2 or r3, or both); a
    # stats query sent after them is answered after all four were decided (one socket, in order)
    harness.send({"t": wire.STATS, "qid": 1})
    rejected = []
    while True:
        msg = harness.recv()
        assert msg is not None, "no answer to the stats query"
        if msg["t"] == wire.STATS:
            break
        if msg["t"] == wire.REJECT:
            assert msg["status"] == 503 and "max-waiting-requests" in msg["msg"]
            rejected.append(msg["rid"])
    assert rejected in (["r2"], ["r3"], ["r2", "r3"])
    # the bound reads the queue's length: arriving requests never pay for a whole stats snapshot
    assert harness.loop.engine.stats_calls == 1  # the STATS query
    for rid in rids:
        harness.send({"t": wire.ABORT, "rid": rid})
    admitted = set(rids) - set(rejected)
    assert all("abort" in v for v in drain(harness, admitted).values())


def test_abort_stats_and_malformed(harness):
    harness.push.send(b"\xc1not msgpack")
    harness.send({"t": "bogus"})
    harness.send(add("a", [1], max_tokens=1000))
    harness.send({"t": wire.ABORT, "rid": "a"})
    seen = drain(harness, {"a"})
    assert "abort" in seen["a"]
    harness.send({"t": wire.STATS, "qid": 7})
    msg = harness.recv()
    while msg["t"] != wire.STATS:
        msg = harness.recv()
    assert msg["qid"] == 7 and msg["stats"]["num_running"] == 0


def test_malformed_logit_bias_on_the_wire_is_rejected(harness):
    """A `logit_bias` entry that is not a [token, bias] pair fails the request (400), never drops silently."""
    for rid, pairs in (("short", [[5]]), ("map", [{"5": 1.0}]), ("three", [[5, 1.0, 2]])):
        msg = add(rid, [1])
        msg["p"]["logit_bias"] = pairs
        harness.send(msg)
        assert drain(harness, {rid})[rid] == [400, True]
    harness.send(add("ok", [1], max_tokens=2))
    assert drain(harness, {"ok"})["ok"][-2:] == ["length", True]


def test_failing_step_aborts_and_loop_survives(harness):
    harness.send(add("boom1", [1]))
    seen = drain(harness, {"boom1"})
    assert seen["boom1"][-2:] == ["abort", True]
    harness.send(add("ok", [1], max_tokens=2))
    assert drain(harness, {"ok"})["ok"][-2:] == ["length", True]


class LosingEngine(FakeEngine):
    """Its step fails once a rank is gone, as a tensor-parallel forward does when a peer died."""

    def step(self) -> list[StepOutput]:
        if self.gone is not None:
            raise RuntimeError(f"RankLost: {self.gone}")
        return super().step()


@pytest.mark.parametrize("busy", [True, False])
def test_a_lost_rank_ends_the_loop_with_a_failure(busy):
    """A step failing because a rank is gone (or the loss noticed while idle) ends the loop, which the process
    turns into exit status 1; a running request is aborted with the reason."""
    engine = LosingEngine()
    h = Harness(engine, max_waiting=4)
    try:
        if busy:
            h.send(add("a", [1], max_tokens=10**6))
            assert h.recv() is not None  # it is running
        engine.gone = "rank 1: the control channel closed (EOFError)"
        h.thread.join(3)
        assert not h.thread.is_alive() and h.loop.failure == engine.gone
        if busy:
            rows = [wire.row_to_output(r) for m in iter(lambda: h.recv(500), None) for r in m.get("outs", [])]
            last = [o for o in rows if o.request_id == "a"][-1]
            assert last.finished and last.finish_reason == "abort" and engine.gone in last.error
    finally:
        h.close()


class TimedEngine(FakeEngine):
    """Records the loop's `step_started` seen from inside each step; steps of ids starting with 'boom' raise."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: Optional[EngineLoop] = None
        self.seen: list[Optional[float]] = []

    def step(self) -> list[StepOutput]:
        self.seen.append(self.loop.step_started)
        return super().step()


def test_the_step_running_now_is_timed_for_the_watchdog():
    """`step_started` is set for exactly the duration of each step (a failed one too), None between steps."""
    engine = TimedEngine()
    h = Harness(engine, max_waiting=4)
    engine.loop = h.loop
    try:
        before = time.monotonic()
        h.send(add("a", [1], max_tokens=3))
        assert drain(h, {"a"})["a"][-1] is True
        h.send(add("boom", [1]))
        assert drain(h, {"boom"})["boom"][-2] == "abort"
        assert len(engine.seen) >= 4 and all(t is not None and t >= before for t in engine.seen)
        assert engine.seen == sorted(engine.seen)
        assert h.loop.step_started is None
    finally:
        h.close()


def test_shutdown_aborts_live_requests():
    h = Harness(FakeEngine(), max_waiting=10)
    h.send(add("slow", [1], max_tokens=10**6))
    assert h.recv() is not None  # it is running
    h.send({"t": wire.SHUTDOWN})
    h.thread.join(10)
    assert not h.thread.is_alive()
    h.push.close(linger=0)
    h.pull.close(linger=0)
    for s in h.sockets:
        s.close(linger=0)
    h.ctx.term()


class WarmEngine(FakeEngine):
    """Records when the loop asks it to keep the device warm; `answer` is what `keep_warm` returns (an
    exception instance: raised)."""

    def __init__(self, answer=True):
        super().__init__()
        self.answer = answer
        self.warm_calls: list[float] = []

    def keep_warm(self) -> bool:
        self.warm_calls.append(time.monotonic())
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_idle_loop_keeps_the_device_warm_for_the_window_after_a_step():
    engine = WarmEngine()
    h = Harness(engine, max_waiting=4, keep_warm_s=0.3)
    try:
        time.sleep(0.5)  # the start-up window passes
        assert len(engine.warm_calls) >= 5 and engine.warm_calls[-1] - engine.warm_calls[0] < 0.35
        h.send(add("a", [1], max_tokens=2))
        assert drain(h, {"a"})["a"][-2:] == ["length", True]
        done = time.monotonic()
        time.sleep(0.6)
        after = [t for t in engine.warm_calls if t > done]
        # every KEEP_WARM_MS or so for the window after the last step, then none
        assert len(after) >= 5 and after[-1] - done < 0.35
        assert max(b - a for a, b in zip(after, after[1:])) < 0.1
    finally:
        h.close()


@pytest.mark.parametrize("answer", [False, RuntimeError("device lost")])
def test_keep_warm_stops_where_there_is_nothing_to_warm_or_it_fails(answer):
    engine = WarmEngine(answer)
    h = Harness(engine, max_waiting=4, keep_warm_s=5.0)
    try:
        time.sleep(0.2)
        h.send(add("a", [1], max_tokens=2))
        assert drain(h, {"a"})["a"][-2:] == ["length", True]  # the loop still serves
        time.sleep(0.2)
        assert len(engine.warm_calls) == 1  # asked once; never again, not even after a step
    finally:
        h.close()


def test_no_keep_warm_by_default_on_the_loop():
    engine = WarmEngine()
    h = Harness(engine, max_waiting=4)
    try:
        h.send(add("a", [1], max_tokens=2))
        drain(h, {"a"})
        time.sleep(0.1)
        assert engine.warm_calls == []
    finally:
        h.close()


def test_a_gone_frontend_ends_the_loop_while_it_keeps_warm():
    engine = WarmEngine()
    ctx = zmq.Context()
    recv, send = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    recv.bind("inproc://req-orphan")
    send.bind("inproc://out-orphan")
    loop = EngineLoop(engine, recv, send, 4, parent_pid=-1, keep_warm_s=60.0)  # never this process's parent
    t = threading.Thread(target=loop.run, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(5)
    try:
        assert not t.is_alive() and time.monotonic() - t0 < 1.0  # at the first idle wake, not after the window
    finally:
        recv.close(linger=0)
        send.close(linger=0)
        ctx.term()
