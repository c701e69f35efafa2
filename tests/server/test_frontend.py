"""The frontend's start-up warm-up loads what a first request would otherwise load on its path."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import asyncio, sys
from tierlm.server.frontend import _warm_up
backend = "anyio._backends._asyncio"
before = backend in sys.modules
asyncio.run(_warm_up(None))
print(before, backend in sys.modules)
"""


def test_warm_up_loads_anyios_asyncio_backend() -> None:
    """In a fresh interpreter (this one has it loaded by other tests already)."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "True"]


def _app_with_one_route():
    from fastapi import APIRouter, FastAPI

    router = APIRouter()

    @router.get("/ping")
    async def ping() -> dict:
        return {"ok": True}

    app = FastAPI()
    app.include_router(router)
    return app


def test_warm_routes_leaves_no_source_read_to_the_first_request(monkeypatch) -> None:
    """FastAPI reads an endpoint's source on its first request (file and line for its error messages); after
    `warm_routes` the first request reads none."""
    import inspect

    from fastapi.testclient import TestClient

    from tierlm.server.frontend import warm_routes

    reads, real = [], inspect.getsourcelines
    monkeypatch.setattr(inspect, "getsourcelines", lambda obj: reads.append(obj) or real(obj))
    cold = _app_with_one_route()
    assert TestClient(cold).get("/ping").json() == {"ok": True}
    if not reads:
        pytest.skip("this FastAPI reads no endpoint source on a first request")
    reads.clear()
    warmed = _app_with_one_route()
    warm_routes(warmed)
    assert [obj.__name__ for obj in reads] == ["ping"]
    reads.clear()
    assert TestClient(warmed).get("/ping").json() == {"ok": True}
    assert reads == []
