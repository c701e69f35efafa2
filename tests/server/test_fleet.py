"""What gateways read from a running server: the gauges under the names the Gateway API Inference Extension
scrapes (vLLM's), the discovery endpoints routers probe, and the KV event stream of `--kv-events-config`."""
from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.engine.kv_subscriber import BlockStored, Subscriber
from tests.server.helpers import ENGINE_FLAGS, free_port, start_server
from tierlm.server.metrics import ServerMetrics
from tierlm.version import __version__


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    d = tmp_path_factory.mktemp("events")
    return {"publisher": "zmq", "endpoint": f"ipc://{d}/pub", "replay_endpoint": f"ipc://{d}/replay", "topic": "kv"}


@pytest.fixture(scope="module")
def server(tiny_qwen3, tmp_path_factory, events):
    srv = start_server(tiny_qwen3, tmp_path_factory.mktemp("fleet"), "--served-model-name", "tiny",
                       "--kv-events-config", json.dumps(events))
    yield srv
    assert srv.stop() == 0, srv.log_text()


def series(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " ")]


def test_gateway_gauge_names_on_metrics(server):
    r = httpx.post(server.url + "/generate", json={"input_ids": list(range(1, 30)),
                                                  "sampling_params": {"max_tokens": 2}}, timeout=60)
    assert r.status_code == 200, r.text
    text = httpx.get(server.url + "/metrics", timeout=30).text
    for name in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
                 "vllm:gpu_cache_usage_perc"):
        (line,) = series(text, name)
        assert line.startswith(name + '{engine="0",model_name="tiny"} '), line
        assert 0.0 <= float(line.rsplit(" ", 1)[1]) <= 1.0 or "requests" in name
        assert f"# TYPE {name} gauge" in text
    total = server.stats()["kv_total_tokens"]
    assert series(text, "vllm:cache_config_info") == [
        f'vllm:cache_config_info{{block_size="4",cache_dtype="auto",engine="0",num_gpu_blocks="{total // 4}"}} 1.0']
    assert series(text, "tierlm_num_requests_waiting"), "TierLM's own gauges are still there"


def test_gauge_values_follow_the_engine_snapshot():
    m = ServerMetrics("m", 16)
    assert "vllm:" not in m.render().decode(), "no engine snapshot yet: no gauges"
    m.update_engine({"num_waiting": 3, "num_running": 2, "kv_total_tokens": 320, "kv_used_tokens": 80,
                     "kv_cache_dtype": "fp8"})
    text = m.render().decode()
    assert 'vllm:num_requests_waiting{engine="0",model_name="m"} 3.0' in text
    assert 'vllm:num_requests_running{engine="0",model_name="m"} 2.0' in text
    assert 'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25' in text
    assert 'vllm:cache_config_info{block_size="16",cache_dtype="fp8",engine="0",num_gpu_blocks="20"} 1.0' in text


def test_discovery_endpoints(server, tiny_qwen3, events):
    models = httpx.get(server.url + "/v1/models", timeout=10).json()
    (card,) = models["data"]
    assert (card["id"], card["owned_by"], card["object"], card["parent"]) == ("tiny", "tierlm", "model", None)
    assert card["root"] == str(tiny_qwen3) and card["max_model_len"] > 0
    assert httpx.get(server.url + "/version", timeout=10).json() == {"version": __version__}
    for path in ("/server_info", "/get_server_info"):
        info = httpx.get(server.url + path, timeout=10).json()
        assert info["engine"] == "tierlm" and info["version"] == __version__
        assert (info["served_model_name"], info["model_path"], info["dp_size"]) == ("tiny", str(tiny_qwen3), 1)
        assert info["page_size"] == 4 and info["max_total_tokens"] > 0 and info["kv_tiers"] == ["L1"]
        assert info["kv_events"] == {"endpoint": events["endpoint"], "replay_endpoint": events["replay_endpoint"],
                                     "topic": "kv", "block_size": 4, "media": ["GPU"]}
    for path in ("/model_info", "/get_model_info"):
        info = httpx.get(server.url + path, timeout=10).json()
        assert info["model_path"] == str(tiny_qwen3) and info["is_generation"] is True
        assert info["model_type"] == "qwen3" and info["architectures"] == ["Qwen3ForCausalLM"]


def test_event_stream_of_a_served_request(server, events):
    sub = Subscriber(events["endpoint"], events["replay_endpoint"], "kv")
    try:
        prompt = [7, 8, 9, 10, 11, 12, 13, 14, 15]
        r = httpx.post(server.url + "/generate", json={"input_ids": prompt, "sampling_params": {"max_tokens": 1}},
                       timeout=60)
        assert r.status_code == 200, r.text
        sub._catch_up()  # everything published so far, from the replay buffer
        stored = [e for b in sub.batches for e in b.events if isinstance(e, BlockStored)]
        assert any(e.token_ids == prompt[:8] and e.medium == "GPU" and e.parent_block_hash is None
                   for e in stored), stored
    finally:
        sub.close()


def test_bad_kv_events_config_is_one_line(tiny_qwen3):
    r = subprocess.run([sys.executable, "-m", "tierlm", "serve", "--model", str(tiny_qwen3), *ENGINE_FLAGS,
                        "--port", str(free_port()), "--kv-events-config", '{"publisher": "zmq", "topic": 5}'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--kv-events-config: topic has the wrong type" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
