"""`benchmarks/pin_decode_launch.py`: copies of a tuned root whose decode tuning the engine then reads as pinned."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from tierlm.attention import triton_autotune  # noqa: E402
from tierlm.attention.triton_backend import TritonAttentionConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_copies_pin_one_launch_for_every_batch(tmp_path, monkeypatch):
    monkeypatch.delenv("TIERLM_AUTOTUNE_CACHE", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(triton_autotune, "tune_decode", lambda *a, **kw: {"launches": [[1, 128, 8, 2]]})
    root = tmp_path / "root"

    def tuned(path):
        monkeypatch.setenv("TIERLM_CACHE_DIR", str(path))
        return triton_autotune.tuned_config(TritonAttentionConfig(), 16, 8, 128, torch.bfloat16, torch.device("cpu"))
    assert tuned(root).decode_launch(256) == (128, 8, 2)
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pin_decode_launch.py"), str(root), "64:3", "128:3"],
                   check=True)
    monkeypatch.setattr(triton_autotune, "tune_decode", lambda *a, **kw: pytest.fail("a pinned root re-tuned"))
    for copy, launch in (("root-64-3", (64, 4, 3)), ("root-128-3", (128, 4, 3))):
        cfg = tuned(tmp_path / copy)
        assert cfg.decode_launch(1) == cfg.decode_launch(512) == launch
    assert tuned(root).decode_launch(256) == (128, 8, 2)  # the tuned root itself is left as it was
