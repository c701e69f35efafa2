"""The frontend's start-up warm-up loads what a first streaming request would otherwise import on its path."""
from __future__ import annotations

import subprocess
import sys

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
