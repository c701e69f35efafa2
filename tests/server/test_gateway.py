"""The recipe of docs/fleet.md, end to end on loopback: two `tierlm serve` replicas sharing one Redis L3 behind
SGLang's router in cache-aware mode. Greedy turns through the router match a single engine, the turns of one
conversation stay on one replica, and a turn sent to the other replica is served its prefix from the shared L3."""
from __future__ import annotations

import shutil
import time

import httpx
import pytest

from tests.redis_server import start_redis
from tests.server.gateway import Gateway
from tests.server.helpers import ServerProcess
from tierlm.sampling_params import SamplingParams

CPU = dict(device="cpu", dtype="float32", kv_cache_gb=0.01, page_size=4)
SYSTEM = {"role": "system", "content": "You are a terse assistant who answers questions about the sea."}
ROUTED_TURNS = ["Why is the sea salty?", "And why is it blue?", "How deep is it?"]
FORCED_TURN = "Is it cold down there?"
MAX_TOKENS = 6
# The body SGLang's router forwards for a plain OpenAI chat request: its own extensions at their defaults.
ROUTER_FIELDS = {"no_stop_trim": False, "ignore_eos": False, "continue_final_message": False,
                 "skip_special_tokens": True, "separate_reasoning": True, "stream_reasoning": True,
                 "return_hidden_states": False, "logprobs": False}


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@pytest.fixture(scope="module")
def replicas(tiny_qwen3, tmp_path_factory, redis):
    logs = tmp_path_factory.mktemp("replicas")
    flags = ["--served-model-name", "tiny", "--kv-store", redis.url,
             # A prefix another replica wrote to L3 is waited for at arrival, however short, and then used.
             "--hicache-prefetch-policy", "wait_complete", "--hicache-prefetch-threshold", "4"]
    # Replica b loads a copy of the model from another directory: page keys name the model's content, not
    # where it lives, so the two still share every page.
    models = [tiny_qwen3, shutil.copytree(tiny_qwen3, logs / "model-copy")]
    started: list[ServerProcess] = []
    try:
        for name, model in zip("ab", models):
            started.append(ServerProcess(model, logs / f"{name}.log", *flags))
        yield [srv.wait_ready() for srv in started]
    finally:
        codes = [srv.stop() for srv in started]
    assert codes == [0, 0], [srv.log_text() for srv in started]


@pytest.fixture(scope="module")
def gateway(replicas, tmp_path_factory):
    router = Gateway([srv.url for srv in replicas], tmp_path_factory.mktemp("gateway") / "router.log")
    try:
        yield router.wait_ready()
    finally:
        router.stop()


@pytest.fixture(scope="module")
def single_engine(tiny_qwen3):
    from tierlm import LLM

    llm = LLM(model=str(tiny_qwen3), **CPU)
    yield llm
    llm.close()


def chat(url: str, messages: list[dict]) -> dict:
    r = httpx.post(url + "/v1/chat/completions", timeout=120,
                   json={"model": "tiny", "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()


def reference(llm, messages: list[dict]) -> tuple[str, int]:
    """The single engine's greedy answer to `messages` and its prompt length."""
    tok = llm.tokenizer
    ids = tok.encode(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)
    out = llm.generate([ids], SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS))[0]
    return out.text, len(ids)


def served(replicas: list[ServerProcess]) -> list[int]:
    return [srv.stats()["requests_total"] for srv in replicas]


def wait_l3_writes_settle(srv: ServerProcess, timeout: float = 10) -> None:
    """Backups reach the store after the request finished: wait until the replica's L3 writes stop growing."""
    last, deadline = -1, time.monotonic() + timeout
    while time.monotonic() < deadline:
        written = srv.stats()["tiers"]["L3"]["store"]["pages_written"]
        if written == last and written > 0:
            return
        last = written
        time.sleep(0.3)
    raise AssertionError(f"L3 writes of {srv.url} did not settle (last {last})")


def test_replica_accepts_what_the_router_forwards(replicas):
    r = httpx.post(replicas[0].url + "/v1/chat/completions", timeout=120, json={
        "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 2,
        "temperature": 0.0, "stream": False, **ROUTER_FIELDS})
    assert r.status_code == 200, r.text
    r = httpx.post(replicas[0].url + "/v1/chat/completions", timeout=30, json={
        "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "return_hidden_states": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "return_hidden_states", r.text
    metrics = httpx.get(replicas[0].url + "/metrics", timeout=30).text  # the tiers' series a replica exports
    for line in ('tierlm_host_eviction_order{order="lru"} 1.0', "tierlm_host_eviction_order_flips_total 0.0"):
        assert line in metrics, line
    assert replicas[0].stats()["tiers"]["L3"]["write_policy"] == "auto"  # the default (Redis: written through)


def test_conversation_through_the_gateway_and_shared_l3(gateway, replicas, single_engine):
    messages = [SYSTEM]
    home = None
    for turn, question in enumerate(ROUTED_TURNS):
        messages.append({"role": "user", "content": question})
        before = served(replicas)
        out = chat(gateway.url, messages)
        after = served(replicas)
        text, prompt_tokens = reference(single_engine, messages)
        assert out["choices"][0]["message"]["content"] == text, f"turn {turn}"
        assert out["usage"]["prompt_tokens"] == prompt_tokens
        (replica,) = [i for i in range(2) if after[i] == before[i] + 1]
        assert after[1 - replica] == before[1 - replica], "one turn, one replica"
        home = replica if home is None else home
        assert replica == home, f"turn {turn} left its conversation's replica {home} for {replica}"
        if turn > 0:  # the earlier turns are in this replica's own prefix cache
            assert out["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
        messages.append({"role": "assistant", "content": out["choices"][0]["message"]["content"]})

    other = replicas[1 - home]
    wait_l3_writes_settle(replicas[home])
    before = other.stats()
    messages.append({"role": "user", "content": FORCED_TURN})
    out = chat(other.url, messages)
    text, prompt_tokens = reference(single_engine, messages)
    assert out["choices"][0]["message"]["content"] == text
    assert out["usage"]["prompt_tokens"] == prompt_tokens
    cached = out["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached < prompt_tokens and cached % 4 == 0, out["usage"]
    after = other.stats()  # all of the cached prefix came from L3: none was in this replica's own tiers
    assert after["tier_hits"]["L3"]["tokens"] - before["tier_hits"]["L3"]["tokens"] == cached, after["tier_hits"]
    fetched = after["tiers"]["prefetch"]["pages_fetched"] - before["tiers"]["prefetch"]["pages_fetched"]
    assert fetched == cached // 4


def test_sglang_generate_through_the_gateway(gateway, single_engine):
    """SGLang's native form (what SGLang's own clients send its router): the router forwards it to a replica."""
    r = httpx.post(gateway.url + "/generate", timeout=120, json={
        "text": FORCED_TURN, "sampling_params": {"max_new_tokens": MAX_TOKENS, "temperature": 0},
        "return_logprob": True})
    assert r.status_code == 200, r.text
    got = r.json()
    want = single_engine.generate([FORCED_TURN], SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS))[0]
    assert got["text"] == want.text and got["output_ids"] == want.token_ids
    meta = got["meta_info"]
    assert meta["completion_tokens"] == len(want.token_ids) and meta["finish_reason"]["type"] in ("stop", "length")
    assert [t[1] for t in meta["output_token_logprobs"]] == want.token_ids
