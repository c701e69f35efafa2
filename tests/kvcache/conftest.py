"""Fixtures of the KV tests: a real redis-server per test on a free 127.0.0.1 port (skipped only when the
binary is absent), and a small CPU host pool with random pages for the stores to move."""
from __future__ import annotations

import pytest
import torch

from tests.redis_server import start_redis
from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout


@pytest.fixture
def redis_server(tmp_path):
    server = start_redis(tmp_path)
    yield server
    server.kill()


@pytest.fixture
def host():
    h = HostKVPool(8, KVLayout.gqa(2, 1, 4, torch.float32), page_size=2)
    h.buffer.copy_(torch.randint(0, 256, h.buffer.shape, dtype=torch.uint8))
    return h
