"""`EngineConfig.validate`: every bad value is one ValueError naming its flag."""
from __future__ import annotations

import dataclasses
import math

import pytest

from tierlm.config import EngineConfig

FLOAT_FIELDS = [f.name for f in dataclasses.fields(EngineConfig) if isinstance(f.default, float)
                or f.name in ("kv_cache_gb", "hicache_size")]


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_numbers_are_refused(name, value):
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ValueError, match=f"^{flag}: must be a finite number"):
        EngineConfig(model="m", **{name: value}).validate()


@pytest.mark.parametrize("key", ["", "   "])
def test_empty_api_key_is_refused(key):
    with pytest.raises(ValueError, match="^--api-key: must not be empty"):
        EngineConfig(model="m", api_key=key).validate()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:99999/0", "redis://127.0.0.1:port/0", "rediss://:pw@h:-1/0"])
def test_bad_redis_url_names_the_flag_without_echoing_it(url):
    with pytest.raises(ValueError, match="^--kv-store: not a valid Redis URL") as e:
        EngineConfig(model="m", kv_store=url).validate()
    assert "pw" not in str(e.value)


def test_good_values_pass():
    EngineConfig(model="m", api_key="k", kv_store="redis://:pw@127.0.0.1:6379/2", kv_cache_gb=0.5).validate()


@pytest.mark.parametrize("text, why", [
    ("not json", "not valid JSON"),
    ('["zmq"]', "must be a JSON object"),
    ('{"publisher": "kafka"}', "unknown publisher 'kafka'"),
    ('{"publisher": "zmq", "endpoit": "tcp://*:1"}', "unknown key 'endpoit'"),
    ('{"publisher": "zmq", "buffer_steps": "10"}', "buffer_steps has the wrong type"),
    ('{"publisher": "zmq", "buffer_steps": 0}', "buffer_steps must be >= 1"),
    ('{"publisher": "zmq", "hwm": true}', "hwm has the wrong type"),
    ('{"publisher": "zmq", "endpoint": "localhost:5557"}', "endpoint 'localhost:5557' is not a ZMQ address"),
])
def test_bad_kv_events_config_names_the_flag(text, why):
    with pytest.raises(ValueError, match=f"^--kv-events-config: {why}"):
        EngineConfig(model="m", kv_events_config=text).validate()


def test_kv_events_config_spellings_of_vllm_and_sglang():
    from tierlm.kv_events_settings import parse_kv_events_config as parse

    s = parse('{"publisher": "zmq", "endpoint": "tcp://*:5557", "topic": "kv"}')
    assert (s.endpoint, s.topic, s.replay_endpoint, s.buffer_steps) == ("tcp://*:5557", "kv", None, 10_000)
    assert parse('{"enable_kv_cache_events": true, "replay_endpoint": "tcp://*:5558"}').replay_endpoint
    for off in ("{}", '{"publisher": "null"}', '{"publisher": "zmq", "enable_kv_cache_events": false}'):
        assert parse(off) is None, off


def test_kv_events_need_the_prefix_cache():
    with pytest.raises(ValueError, match="^--kv-events-config: the events describe the prefix cache"):
        EngineConfig(model="m", kv_events_config='{"publisher": "zmq"}', enable_prefix_cache=False).validate()


def test_watchdog_timeout_is_a_bound_or_off():
    EngineConfig(model="m", watchdog_timeout=0.0).validate()  # off
    assert EngineConfig(model="m").watchdog_timeout is None  # by device: see test_watchdog
    with pytest.raises(ValueError, match="^--watchdog-timeout: must be >= 0, got -1"):
        EngineConfig(model="m", watchdog_timeout=-1.0).validate()
