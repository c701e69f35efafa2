"""A writer killed (SIGKILL) in the middle of its writes loses only the segment it was writing: a new store on
the directory indexes whole segments only, and every page it finds reads back as written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.stores.file import FileKVStore

LAYOUT = "KVLayout.latent(3, 160, torch.float32)"  # 7,680-byte pages: a multiple of 512 bytes, not of 4 KiB
WRITER = textwrap.dedent(f"""
    import sys, torch
    from tierlm.kvcache.host_pool import HostKVPool
    from tierlm.kvcache.layout import KVLayout
    from tierlm.kvcache.stores.file import FileKVStore
    host = HostKVPool(64, {LAYOUT}, 4)
    for p in range(64):
        host.buffer[p] = p
    store = FileKVStore(sys.argv[1], 1 << 40)
    store.attach(host)
    print("ready", flush=True)
    for call in range(10**6):  # until killed: calls of 64 pages, page p's bytes all p, keys by call
        store.batch_set([f"{{call:032x}}{{p:032x}}" for p in range(64)], list(range(64)))
""")


@pytest.mark.parametrize("delay", [0.1, 0.2, 0.4])
def test_a_killed_writer_leaves_only_whole_segments(tmp_path, delay):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)  # ours, by PID
    proc.wait(timeout=10)
    host = HostKVPool(64, KVLayout.latent(3, 160, torch.float32), 4)
    store = FileKVStore(tmp_path, 1 << 40)
    store.attach(host)
    pages = store.stats()["pages"]
    assert pages >= 64 and pages % 64 == 0  # it wrote before it died, and whole calls only (a segment each)
    keys = [f"{call:032x}{p:032x}" for call in range(pages // 64) for p in range(64)]
    for i in range(0, len(keys), 64):
        host.buffer.fill_(255)
        assert store.batch_get(keys[i:i + 64], list(range(64))) == [True] * 64
        assert all(bool((host.buffer[p] == p).all()) for p in range(64))
    assert store.stats()["corrupt"] == 0
    store.close()
