"""`configure_environment`: third-party variables under the root, user settings win, children recompute,
one warning when torch got there first; and a real torch.compile in a fresh process lands under the root."""
from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

from tierlm.cachedir import configure_environment
from tierlm.cachedir.env import FP_FUSION_VAR, PCH_VAR
from tierlm.cachedir.root import WIRED_VAR

from .conftest import child_env, last_json, run_script

VARS = {"TRITON_CACHE_DIR": "triton", "TORCHINDUCTOR_CACHE_DIR": "inductor", "CUDA_CACHE_PATH": "cuda",
        "TVM_FFI_CACHE_DIR": "jit/tvm-ffi", "FLASHINFER_WORKSPACE_BASE": "flashinfer",
        "DG_JIT_CACHE_DIR": "deep_gemm"}


def test_sets_every_third_party_variable(tmp_path):
    env = {"TIERLM_CACHE_DIR": str(tmp_path)}
    root = configure_environment(env)
    assert root is not None and root.path == tmp_path
    for var, rel in VARS.items():
        assert env[var] == str(tmp_path / rel)
    assert env[PCH_VAR] == "0" and env[FP_FUSION_VAR] == "1"
    assert not (tmp_path / "triton").exists()  # wiring writes nothing


def test_user_values_win_and_are_left_alone(tmp_path):
    env = {"TIERLM_CACHE_DIR": str(tmp_path / "c"), "TRITON_CACHE_DIR": "/opt/image/triton", PCH_VAR: "1",
           FP_FUSION_VAR: "0"}
    configure_environment(env)
    assert env["TRITON_CACHE_DIR"] == "/opt/image/triton"
    assert env[PCH_VAR] == "1" and env[FP_FUSION_VAR] == "0"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "c" / "inductor")
    assert "TRITON_CACHE_DIR" not in json.loads(env[WIRED_VAR])["vars"]


def test_idempotent_and_child_recomputes_for_its_own_root(tmp_path):
    env = {"TIERLM_CACHE_DIR": str(tmp_path / "a")}
    configure_environment(env)
    first = dict(env)
    configure_environment(env)
    assert {k: v for k, v in env.items() if k != WIRED_VAR} == {k: v for k, v in first.items() if k != WIRED_VAR}
    child = dict(env, TIERLM_CACHE_DIR=str(tmp_path / "b"))  # inherited values + a new root
    configure_environment(child)
    assert child["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "b" / "inductor")


def test_warns_once_when_torch_already_fixed_inductor_dir(tmp_path, monkeypatch, caplog):
    if "torch" not in sys.modules:
        monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    env = {"TIERLM_CACHE_DIR": str(tmp_path), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "t" / "torchinductor_u")}
    with caplog.at_level(logging.WARNING, logger="tierlm.cachedir.env"):
        configure_environment(env)
        configure_environment(env)
    warnings = [r for r in caplog.records if "TORCHINDUCTOR_CACHE_DIR" in r.getMessage()]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "torchinductor_u" in msg and str(tmp_path / "inductor") in msg
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "t" / "torchinductor_u")
    assert env["TRITON_CACHE_DIR"] == str(tmp_path / "triton")


def test_import_tierlm_does_not_import_torch(tmp_path):
    code = "import sys, tierlm, tierlm.cachedir, tierlm.cli.cache; print(int('torch' in sys.modules))"
    import subprocess
    out = subprocess.run([sys.executable, "-c", code], env=child_env(tmp_path), capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "0"


def test_torch_compile_in_fresh_process_lands_under_root(tmp_path):
    env = child_env(tmp_path)
    result = last_json(run_script("_compile_worker.py", "plain", env=env, timeout=300))
    assert result["fxgraph_miss"] >= 1  # it really compiled
    root = Path(env["TIERLM_CACHE_DIR"])
    inductor = root / "inductor"
    assert list(inductor.rglob("*.so")), "Inductor's compiled C++ kernels should be under the root"
    assert list((inductor / "fxgraph").rglob("*")), "FX graph cache should be under the root"
    tmpdir, home = Path(env["TMPDIR"]), Path(env["HOME"])
    assert not list(tmpdir.glob("torchinductor_*"))
    assert not (home / ".triton").exists()
    # Stronger: nothing at all was left in TMPDIR or HOME.
    assert [p for p in tmpdir.rglob("*")] == [] and [p for p in home.rglob("*")] == []
