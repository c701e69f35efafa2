"""--compile on a tiny model (CPU): greedy outputs identical to eager; the AOT tree makes a second start on the
same root, and a start on a fresh root with the exported tree imported, compile nothing (torch's own counters);
a tree from another environment is refused naming the mismatch. The key hashes what changes compiled code.

Compiling on the CPU takes tens of seconds: one compiling start (`cold`, module-scoped), two loading ones."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tierlm.cachedir import AotBundle, AutotuneStore
from tierlm.cli.bench.startup import child_env
from tierlm.config import EngineConfig
from tierlm.engine.aot_tree import AotTree, key_factors
from tierlm.engine.compile import check_compilable
from tierlm.models.config import ModelConfig

WORKER = Path(__file__).with_name("_compile_worker.py")


def _start(model_dir: Path, root: Path) -> dict:
    proc = subprocess.run([sys.executable, str(WORKER), str(model_dir)], env=child_env(root), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cache(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tierlm", "cache", *args], env=child_env(root),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cold(tiny_qwen3, tmp_path_factory):
    root = tmp_path_factory.mktemp("compile") / "root-a"
    return root, _start(tiny_qwen3, root)


@pytest.mark.slow
def test_compiled_greedy_matches_eager_and_the_cold_start_fills_a_sealed_tree(cold):
    root, r = cold
    assert r["compiled"] == r["eager"]
    s = r["startup"]
    assert s["dynamo_graphs"] == 1 and s["aot_autograd_misses"] == 1 and s["compilations"] >= 2
    assert s["new_kernels"] > 0 and s["aot_sealed_now"]
    tree = Path(r["tree"])
    assert tree.parent == root / "aot" and tree.name == s["aot_key"]
    assert (tree / "manifest.json").is_file() and (tree / "precompiled" / "forward.bin").is_file()
    assert list((tree / "inductor").rglob("*.so")), "Inductor's kernels must be inside the tree"
    assert not list((root / "inductor").rglob("*.so")), "nothing compiled may land outside the tree"
    assert r["autotune_override_after_start"] is None  # the store's redirect ends with the start


def test_tree_redirects_the_autotune_store_only_during_start_up(tmp_path, monkeypatch):
    monkeypatch.setenv("TIERLM_CACHE_DIR", str(tmp_path / "root"))
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.setenv(var, os.environ.get(var, ""))  # restored after the test
    for before in (None, str(tmp_path / "mine")):
        if before is None:
            monkeypatch.delenv("TIERLM_AUTOTUNE_CACHE_DIR", raising=False)
        else:
            monkeypatch.setenv("TIERLM_AUTOTUNE_CACHE_DIR", before)
        bundle = AotBundle.open({"model": "m"})
        bundle.activate()
        tree = AotTree(bundle, before)
        assert AutotuneStore().directory == bundle.autotune_dir
        tree.end_startup()
        assert os.environ.get("TIERLM_AUTOTUNE_CACHE_DIR") == before
        assert AutotuneStore().directory == (Path(before) if before else tmp_path / "root" / "autotune")
        bundle.release()


@pytest.mark.slow
def test_second_start_on_the_same_root_compiles_nothing(cold, tiny_qwen3):
    root, first = cold
    r = _start(tiny_qwen3, root)
    s = r["startup"]
    assert s["compilations"] == s["dynamo_graphs"] == s["aot_autograd_misses"] == s["inductor_graph_misses"] == 0
    assert s["new_kernels"] == 0 and not s["aot_sealed_now"] and s["aot_key"] == first["startup"]["aot_key"]
    assert r["compiled"] == r["eager"] == first["eager"]


@pytest.mark.slow
def test_exported_tree_imported_into_a_fresh_root_compiles_nothing(cold, tiny_qwen3, tmp_path):
    root_a, first = cold
    archive = tmp_path / "aot.tar.gz"
    assert _cache(root_a, "export", "-o", str(archive)).returncode == 0
    root_b = tmp_path / "elsewhere" / "root-b"
    proc = _cache(root_b, "import", str(archive))
    assert proc.returncode == 0, proc.stderr
    r = _start(tiny_qwen3, root_b)
    s = r["startup"]
    assert s["compilations"] == 0 and s["new_kernels"] == 0
    assert Path(r["tree"]) == root_b / "aot" / first["startup"]["aot_key"]
    assert r["compiled"] == r["eager"] == first["eager"]
    assert _cache(root_b, "verify").returncode == 0


@pytest.mark.slow
def test_tree_from_another_environment_is_refused_naming_the_mismatch(cold, tmp_path):
    root_a, first = cold
    tree = root_a / "aot" / first["startup"]["aot_key"]
    manifest = json.loads((tree / "manifest.json").read_text())
    manifest["environment"]["torch"] = "1.0.0"
    foreign = tmp_path / "foreign-root"
    (foreign / "aot").mkdir(parents=True)
    copy = foreign / "aot" / tree.name
    subprocess.run(["cp", "-r", str(tree), str(copy)], check=True)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    archive = tmp_path / "foreign.tar.gz"
    assert _cache(foreign, "export", "-o", str(archive)).returncode == 0
    proc = _cache(tmp_path / "root-c", "import", str(archive))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "torch '1.0.0' (bundle)" in proc.stderr and f"{torch.__version__!r} (here)" in proc.stderr
    assert not (tmp_path / "root-c" / "aot" / tree.name).exists()


def _factors(model_dir: Path, **changes) -> dict:
    config = EngineConfig(model=str(model_dir), **changes)
    mc = ModelConfig.from_dir(model_dir)
    return key_factors(config, mc, torch.device("cpu"), torch.float32, 512, {"device_arch": "cpu-x"})


def test_key_hashes_the_config_not_its_path_and_changes_with_what_changes_code(tiny_qwen3, tmp_path):
    copy = tmp_path / "same-config-elsewhere"
    subprocess.run(["cp", "-r", str(tiny_qwen3), str(copy)], check=True)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["_name_or_path"] = str(copy)
    (copy / "config.json").write_text(json.dumps(cfg))
    base = _factors(tiny_qwen3, compile=True)
    assert _factors(copy, compile=True) == base
    assert str(tiny_qwen3) not in json.dumps(base) and str(tmp_path) not in json.dumps(base)
    assert base["compile"] is not None and _factors(tiny_qwen3)["compile"] is None
    assert base["tp_size"] == 1 and base["tierlm_code"]
    cfg["num_hidden_layers"] = 3
    (copy / "config.json").write_text(json.dumps(cfg))
    assert _factors(copy, compile=True)["model"] != base["model"]


class _SyncsWithHost(nn.Module):
    cuda_graph_safe = False


def test_compile_refuses_a_model_whose_forward_syncs_with_the_host():
    with pytest.raises(ValueError, match=r"^--compile: _SyncsWithHost's forward syncs with the host"):
        check_compilable(_SyncsWithHost())


def test_triton_toolchain_is_pinned_to_torchs_ptxas(tmp_path, monkeypatch):
    import torch

    from tierlm.engine.aot_tree import pin_triton_toolchain

    fake = tmp_path / "torch"
    (fake / "bin").mkdir(parents=True)
    monkeypatch.setattr(torch, "__file__", str(fake / "__init__.py"))
    env: dict = {}
    pin_triton_toolchain(env)
    assert env == {}  # no ptxas shipped with torch: Triton's own stays
    ptxas = fake / "bin" / "ptxas"
    ptxas.write_text("#!/bin/sh\n")
    ptxas.chmod(0o755)
    pin_triton_toolchain(env)
    assert env == {"TRITON_PTXAS_PATH": str(ptxas.resolve())}
    env = {"TRITON_PTXAS_PATH": "/opt/ptxas"}  # the user's choice wins
    pin_triton_toolchain(env)
    assert env == {"TRITON_PTXAS_PATH": "/opt/ptxas"}
