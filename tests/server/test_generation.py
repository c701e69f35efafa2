"""`Generation`'s outputs: each sub-request's queued outputs merged when the consumer fell behind."""
from __future__ import annotations

import asyncio

from tierlm.engine.outputs import StepOutput, TokenLogprob
from tierlm.sampling_params import SamplingParams
from tierlm.server import wire
from tierlm.server.generation import Generation, merge_queued
from tierlm.server.requests import SubRequest


def out(rid: str, ids: list[int], text: str, finished: bool = False, n: int = 0, lps=None, error=None) -> StepOutput:
    return StepOutput(rid, ids, text, lps, finished, "length" if finished else None, 3, 1, n, error)


def test_merge_keeps_each_requests_order_and_last_state():
    lp = [TokenLogprob(1, -0.5), TokenLogprob(2, -0.25), TokenLogprob(3, -1.0)]
    items = [out("a", [1], "x", n=1, lps=lp[:1]), out("b", [7], "p", n=1), out("a", [2], "y", n=2, lps=lp[1:2]),
             out("a", [3], "z", finished=True, n=3, lps=lp[2:]), out("b", [8], "q", n=2)]
    a, b = merge_queued(items)
    assert (a.new_token_ids, a.new_text, a.new_logprobs, a.finished, a.finish_reason, a.num_output_tokens) == (
        [1, 2, 3], "xyz", lp, True, "length", 3)
    assert (b.new_token_ids, b.new_text, b.finished, b.num_output_tokens) == ([7, 8], "pq", False, 2)
    assert items[0].new_token_ids == [1]  # the inputs are not changed


def test_errors_refusals_and_anything_after_a_finish_stay_apart():
    gone = wire.Rejected("a", 503, "engine died")
    items = [out("a", [1], "x", n=1), out("a", [], "", finished=True, error="boom"), out("b", [5], "u", True, 1),
             out("b", [6], "v", n=2), out("c", [9], "w", n=1), gone, out("c", [10], "k", n=2)]
    merged = merge_queued(items)
    assert [(m.request_id, getattr(m, "new_token_ids", None)) for m in merged] == [
        ("a", [1]), ("a", []), ("b", [5]), ("b", [6]), ("c", [9, 10]), ("a", None)]
    assert merged[1].error == "boom" and merged[-1] is gone


class _Client:
    """Stands in for `EngineClient`: records submissions; outputs are put on the generation's queue by hand."""

    def __init__(self):
        self.submitted: list[str] = []

    def submit(self, rid, token_ids, params, queue):
        self.submitted.append(rid)

    def abort(self, rid):
        pass

    def release(self, rid):
        pass


def test_a_consumer_behind_the_engine_gets_one_event_per_request():
    async def run():
        subs = [SubRequest(rid=f"r{i}", index=i, prompt_index=0, token_ids=[1, 2], params=SamplingParams())
                for i in range(2)]
        gen = Generation(_Client(), subs)
        for i in range(2):
            gen.queue.put_nowait(out(f"r{i}", [10], "a", n=1))
        await gen.start()
        for step in range(2, 5):  # three more steps arrive while nobody reads
            for i in range(2):
                gen.queue.put_nowait(out(f"r{i}", [10 + step], "b", finished=step == 4, n=step))
        events = [o async for _, o in gen.outputs()]
        # the first outputs (held by start()) and the three steps after them: one event per request
        assert [(o.request_id, o.new_token_ids, o.new_text, o.finished) for o in events] == [
            ("r0", [10, 12, 13, 14], "abbb", True), ("r1", [10, 12, 13, 14], "abbb", True)]
        assert len(gen.last_token_at) == 2 and not gen.unfinished

    asyncio.run(run())


def test_a_consumer_that_keeps_up_gets_every_step_alone():
    async def run():
        sub = SubRequest(rid="r", index=0, prompt_index=0, token_ids=[1], params=SamplingParams())
        gen = Generation(_Client(), [sub])
        gen.queue.put_nowait(out("r", [1], "a", n=1))
        await gen.start()
        seen = []
        stream = gen.outputs()
        seen.append(await stream.__anext__())
        for step in range(2, 4):
            gen.queue.put_nowait(out("r", [step], "b", finished=step == 3, n=step))
            seen.append(await stream.__anext__())
        assert [o.new_token_ids for _, o in seen] == [[1], [2], [3]]

    asyncio.run(run())
