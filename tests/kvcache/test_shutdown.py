"""Nothing decided is lost at shutdown: backups still queued or copying reach the L3 store when the engine is
closed and when the interpreter exits without closing it; a store whose calls raise is counted and logged."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import CPU_OPTS
from tests.kvcache.tiers import cache_prefixes, make_tiered
from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.stores.base import KVStore
from tierlm.kvcache.stores.file import FileKVStore

SCRIPT = textwrap.dedent("""
    import sys
    from tierlm import LLM, SamplingParams
    llm = LLM(sys.argv[1], kv_store="file://" + sys.argv[2], **{opts!r})
    llm.generate(["the quick brown fox jumps over the lazy dog " * 3, "paris is the capital of france " * 4],
                 SamplingParams(temperature=0, max_tokens=4))
    print(llm.engine.kv.metrics.backups["pages"])
    if sys.argv[3] == "close":
        llm.close()
""")


@pytest.mark.parametrize("how,policy", [("close", "write_through"), ("exit", "write_through"),
                                        ("close", "write_back"), ("exit", "write_back")])
def test_every_backed_up_page_reaches_the_file_store(tiny_qwen3, tmp_path, how, policy):
    """With storage write_back nothing is written while the host tier has room, so every host copy is
    written at shutdown."""
    store = tmp_path / "kv"
    opts = {**CPU_OPTS, "hicache_storage_write_policy": policy}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(opts=opts), str(tiny_qwen3), str(store), how],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    backed_up = int(proc.stdout.strip().splitlines()[-1])
    assert backed_up > 0
    assert FileKVStore(store, 1 << 30).stats()["pages"] == backed_up
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr


class RaisingStore(KVStore):
    """A store not built on the blob helper whose every call raises."""

    def batch_exists(self, keys):
        raise OSError("disk on fire")

    def batch_get(self, keys, host_pages):
        raise OSError("disk on fire")

    def batch_set(self, keys, host_pages):
        raise OSError("disk on fire")

    def delete(self, keys):
        raise OSError("disk on fire")

    def clear(self):
        raise OSError("disk on fire")

    def stats(self):
        return {}


def test_errors_of_any_store_are_counted_and_logged_once(caplog):
    kv, _, _ = make_tiered(2, 20, 16, store=RaisingStore(), hasher=PageHasher("t", 2), threads=False)
    try:
        with caplog.at_level(logging.DEBUG, logger="tierlm.kvcache.tier_io"):
            cache_prefixes(kv, 3)
            kv.flush()
        assert kv.tier_stats()["L3"]["io_errors"] == 3
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "disk on fire" in errors[0].getMessage()
        assert kv.tier_stats()["backups"]["pages"] == 9  # the host copies themselves were made
    finally:
        kv.close()
