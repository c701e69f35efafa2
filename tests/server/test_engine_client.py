"""`EngineClient`'s watchdog: an engine process found gone fails the open requests; `on_dead` says whether that is
a failure (logged, "the engine process died") or the exit the server waited for during its own shutdown."""
from __future__ import annotations

import asyncio
import logging

import pytest

from tierlm.sampling_params import SamplingParams
from tierlm.server import wire
from tierlm.server.engine_client import EngineClient


@pytest.mark.parametrize("expected", [False, True])
def test_a_gone_engine_fails_the_open_requests(caplog, expected):
    async def run() -> tuple[wire.Rejected, int]:
        alive = [True]
        calls = []
        client = EngineClient("inproc://req-x", "inproc://out-x", is_alive=lambda: alive[0], watchdog_s=0.01,
                              on_dead=lambda: calls.append(1) or not expected)
        await client.start()
        try:
            q = client.submit("r1", [1, 2], SamplingParams())
            alive[0] = False
            item = await asyncio.wait_for(q.get(), 5)
            await asyncio.sleep(0.05)  # the watchdog stops after the first time
            return item, len(calls)
        finally:
            await client.close()

    with caplog.at_level(logging.INFO, logger="tierlm.server.engine_client"):
        item, calls = asyncio.run(run())
    assert isinstance(item, wire.Rejected) and item.status == 503 and calls == 1
    died = [r for r in caplog.records if "the engine process died" in r.getMessage()]
    if expected:  # a SIGTERM to the group: the engine exits once its requests are done
        assert item.message == "server is shutting down" and not died
    else:
        assert item.message == "the engine process died" and len(died) == 1
