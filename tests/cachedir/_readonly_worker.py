"""Child process for the read-only root test: use a seeded, chmod a-w root through an overlay.

Prints JSON: where the seeded entry / new entry / autotune result came from, and the miss error text.
"""
import json
import os
from pathlib import Path

from tierlm.cachedir import AutotuneStore, CacheMissError, get_or_build, resolve_root


def build(staging: Path) -> None:
    (staging / "kernel.so").write_bytes(b"fresh")


root = resolve_root()
seeded = get_or_build("jit", "cpu/rms", {"src": "v1", "arch": "cpu"}, build)
fresh = get_or_build("jit", "cpu/rms", {"src": "v2", "arch": "cpu"}, build)
tuned = AutotuneStore().get_or_tune("mm", {"arch": "cpu"}, lambda: {"block": -1})
os.environ["TIERLM_CACHE_REQUIRE_HIT"] = "1"
get_or_build("jit", "cpu/rms", {"src": "v1", "arch": "cpu"}, build)  # seeded: still a hit
try:
    get_or_build("jit", "cpu/rms", {"src": "v3", "arch": "cpu"}, build)
    miss = None
except CacheMissError as e:
    miss = str(e)
print(json.dumps({"read_only": root.read_only, "overlay": str(root.overlay), "seeded": str(seeded.path),
                  "seeded_hit": seeded.hit, "fresh": str(fresh.path), "tuned": tuned, "miss": miss,
                  "inductor": os.environ["TORCHINDUCTOR_CACHE_DIR"]}))
