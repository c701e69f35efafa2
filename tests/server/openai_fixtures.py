"""Fixtures shared by the tests of the OpenAI routes: one live `tierlm serve` per test module on the tiny model,
the official `openai` client on it, and the offline `LLM` on the same model for parity."""
from __future__ import annotations

import openai
import pytest

from tests.server.helpers import start_server
from tierlm.sampling_params import SamplingParams

PROMPT = "The quick brown fox jumps over the lazy dog and then"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello to the fox."}]
CPU = dict(device="cpu", dtype="float32", kv_cache_gb=0.01, page_size=4)


@pytest.fixture(scope="module")
def server(tiny_qwen3, tmp_path_factory):
    srv = start_server(tiny_qwen3, tmp_path_factory.mktemp("openai"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def offline(tiny_qwen3):
    from tierlm import LLM

    llm = LLM(model=str(tiny_qwen3), **CPU)
    yield llm
    llm.close()


def greedy(n: int = 16) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n)
