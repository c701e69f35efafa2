"""The Redis reference of `bench_store_io.py`: `redis-benchmark` SET and GET GB/s with values of one encoded
page, measured as the store is (SETs of new keys into an empty database, GETs of keys that all exist)."""
from __future__ import annotations

import os
import re
import subprocess

# redis-benchmark's -r is a C int: a billion keys, among which a few thousand random ones rarely repeat
_SET_KEYSPACE = 10**9


def redis_benchmark(port: int, test: str, value: int, keys: int, clients: int, pipeline: int,
                    keyspace: int = 0) -> float:
    """GB/s of `redis-benchmark -t test` with `keys` requests of `value`-byte values over random keys below
    `keyspace` (default: `keys`)."""
    out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test, "-d", str(value),
                          "-n", str(keys), "-r", str(keyspace or keys), "-c", str(clients), "-P", str(pipeline),
                          "-q"],
                         capture_output=True, text=True, timeout=600).stdout
    rps = re.findall(r"([\d.]+) requests per second", out.replace("\r", "\n"))
    if not rps:
        raise SystemExit(f"cannot read redis-benchmark's output: {out[-300:]!r}")
    return float(rps[-1]) * value / 1e9


def reference_runs(port: int, value: int, keys: int, clients: int, pipeline: int) -> tuple[float, float]:
    """(SET, GET) GB/s of redis-benchmark as the store is measured: SETs of new keys into an empty database
    (the server allocates fresh memory for every value, as for new pages), GETs of keys that all exist."""
    import redis

    client = redis.Redis(port=port)
    client.flushall()
    set_gbs = redis_benchmark(port, "set", value, keys, clients, pipeline, keyspace=_SET_KEYSPACE)
    if client.dbsize() < 0.99 * keys:  # repeated keys would make the reference cheaper than the store's SETs
        raise SystemExit(f"redis-benchmark SET stored {client.dbsize()} keys for {keys} requests")
    client.flushall()
    blob = os.urandom(value)
    for i in range(0, keys, 16):  # redis-benchmark's keys: key:<12-digit random number below -r>
        pipe = client.pipeline(transaction=False)
        for j in range(i, min(i + 16, keys)):
            pipe.set(f"key:{j:012d}", blob)
        pipe.execute()
    get_gbs = redis_benchmark(port, "get", value, keys, clients, pipeline)
    client.flushall()
    client.close()
    return set_gbs, get_gbs


def reference_pass(port: int, value: int, n: int, settings: list, res: dict) -> None:
    for c, p in settings:
        res[f"rb_{c}_{p}"].append(reference_runs(port, value, n, c, p))
