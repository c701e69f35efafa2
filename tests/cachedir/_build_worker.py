"""Child process for entry tests: build (or load) one entry under the root given by the environment.

usage: _build_worker.py MODE LOG [BARRIER]
  MODE build: build_fn logs one line to LOG, writes two files, sleeps 1 s; prints the result as JSON
  MODE hang:  build_fn writes a partial file, touches LOG+'.started', then sleeps (to be SIGKILLed)
  MODE hold:  get_or_build then print "ready" and keep the entry until stdin closes
"""
import json
import os
import sys
import time
from pathlib import Path

from tierlm.cachedir import get_or_build

mode, log = sys.argv[1], Path(sys.argv[2])
barrier = Path(sys.argv[3]) if len(sys.argv) > 3 else None
FACTORS = {"source_sha256": "0" * 64, "arch": "cpu", "flags": ["-O2"]}


def build(staging: Path) -> None:
    if mode == "hang":
        (staging / "part.bin").write_bytes(b"partial")
        Path(str(log) + ".started").touch()
        time.sleep(120)
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    (staging / "lib").mkdir()
    (staging / "lib" / "kernel.so").write_bytes(b"\x7fELF" + b"k" * 4096)
    (staging / "meta.txt").write_text("v1")
    time.sleep(1.0 if mode == "build" else 0)


if barrier is not None:
    while not barrier.exists():
        time.sleep(0.01)
entry = get_or_build("jit", "cpu/demo", FACTORS, build)
ok = (entry.path / "meta.txt").read_text() == "v1" and (entry.path / "lib" / "kernel.so").stat().st_size == 4100
print(json.dumps({"path": str(entry.path), "hit": entry.hit, "ok": ok}), flush=True)
if mode == "hold":
    print("ready", flush=True)
    sys.stdin.read()
