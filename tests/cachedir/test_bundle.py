"""Portable AOT bundles: compile once on root A, export, import on an empty root B elsewhere, and a fresh
process reuses everything (zero recompiles, same outputs). Import refuses damaged or foreign bundles."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tierlm.cachedir import (AotBundle, AutotuneStore, BundleError, export_bundles, import_bundles, iter_entries,
                             resolve_root)
from tierlm.cachedir.manifest import MANIFEST_NAME

from .conftest import child_env, last_json, run_script


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "tierlm.cli.main", "cache", *args], env=env,
                          capture_output=True, text=True)


def test_compile_export_import_zero_recompiles(tmp_path):
    (tmp_path / "a").mkdir()
    env_a = child_env(tmp_path / "a")
    built = last_json(run_script("_compile_worker.py", "bundle-build", env=env_a, timeout=300))
    assert built["fxgraph_miss"] >= 1
    root_a = Path(env_a["TIERLM_CACHE_DIR"])
    bundles = list((root_a / "aot").iterdir())
    assert len(bundles) == 1 and (bundles[0] / MANIFEST_NAME).is_file()
    assert list((bundles[0] / "inductor").rglob("*.so")), "Inductor output must be inside the bundle"
    assert not (root_a / "inductor").exists() or not list((root_a / "inductor").rglob("*.so"))

    archive = tmp_path / "bundle.tar.gz"
    proc = _cli(env_a, "export", "-o", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert "exported 1 bundle" in proc.stdout

    (tmp_path / "elsewhere" / "b").mkdir(parents=True)
    env_b = child_env(tmp_path / "elsewhere" / "b")
    proc = _cli(env_b, "import", str(archive))
    assert proc.returncode == 0, proc.stderr
    root_b = Path(env_b["TIERLM_CACHE_DIR"])
    bundle_b = root_b / "aot" / bundles[0].name
    so_before = sorted(p.name for p in bundle_b.rglob("*.so"))

    loaded = last_json(run_script("_compile_worker.py", "bundle-load", env=env_b, timeout=300))
    assert loaded["fxgraph_miss"] == 0 and loaded["fxgraph_hit"] >= 1
    assert loaded["aot_miss"] == 0 and loaded["aot_hit"] >= 1
    assert loaded["out"] == built["out"]
    assert sorted(p.name for p in bundle_b.rglob("*.so")) == so_before, "nothing may be recompiled"
    assert not list(Path(env_b["TMPDIR"]).rglob("*"))
    proc = _cli(env_b, "verify")
    assert proc.returncode == 0 and "1 ok" in proc.stdout


def _fake_bundle(root, factors=None, environment=None) -> AotBundle:
    bundle = AotBundle.open(factors or {"model": "m"}, root=root)
    (bundle.inductor_dir / "fxgraph").mkdir(parents=True)
    (bundle.inductor_dir / "fxgraph" / "g").write_bytes(b"graph")
    manifest = bundle.seal()
    if environment:
        manifest["environment"].update(environment)
        (bundle.path / MANIFEST_NAME).write_text(json.dumps(manifest))
    return bundle


def test_import_refuses_incompatible_environment_unless_forced(tmp_path):
    root_a = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "a")})
    root_b = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "b")})
    _fake_bundle(root_a, environment={"torch": "1.0.0", "machine": "weird64"})
    archive = tmp_path / "x.tar.gz"
    export_bundles(root_a, archive)
    with pytest.raises(BundleError) as err:
        import_bundles(root_b, archive)
    assert "torch '1.0.0' (bundle)" in str(err.value) and "machine" in str(err.value) and "--force" in str(err.value)
    assert not list(iter_entries(root_b))
    assert len(import_bundles(root_b, archive, force=True)) == 1
    assert [e.subsystem for e in iter_entries(root_b)] == ["aot"]
    assert import_bundles(root_b, archive, force=True) == []  # identical bundle already present


def test_import_refuses_corrupt_archive_content(tmp_path):
    root_a = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "a")})
    bundle = _fake_bundle(root_a)
    (bundle.inductor_dir / "fxgraph" / "g").write_bytes(b"grapH")
    with pytest.raises(BundleError, match="damaged"):
        export_bundles(root_a, tmp_path / "x.tar.gz")
    # hand-made archive with a tampered file
    (bundle.inductor_dir / "fxgraph" / "g").write_bytes(b"graph")
    export_bundles(root_a, tmp_path / "ok.tar.gz")
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(tmp_path / "ok.tar.gz") as src, tarfile.open(bad, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name.endswith("/g"):
                data = b"GRAPH"
            dst.addfile(m, io.BytesIO(data))
    root_b = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "b")})
    with pytest.raises(BundleError, match="corrupt"):
        import_bundles(root_b, bad)


def test_import_rejects_path_traversal(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    root_b = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "b")})
    with pytest.raises(BundleError):
        import_bundles(root_b, evil)
    assert not (tmp_path / "escaped").exists()


def test_unsealed_bundle_is_listed_but_not_exported(tmp_path):
    root = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "a")})
    AotBundle.open({"model": "m"}, root=root)
    assert [e.manifest["format"] for e in iter_entries(root)] == ["tierlm-bundle/unsealed"]
    with pytest.raises(BundleError, match="no sealed AOT bundle"):
        export_bundles(root, tmp_path / "x.tar.gz")


def test_bundle_in_read_only_root_is_copied_to_the_overlay(tmp_path):
    seeded = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "seeded")})
    original = _fake_bundle(seeded, factors={"model": "m", "device_arch": "cpu"})
    ro = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "seeded"), "TIERLM_CACHE_READONLY": "1",
                       "TIERLM_CACHE_OVERLAY_DIR": str(tmp_path / "overlay")})
    bundle = AotBundle.open({"model": "m", "device_arch": "cpu"}, root=ro)
    assert bundle.path == tmp_path / "overlay" / "aot" / original.key and bundle.sealed
    assert (bundle.inductor_dir / "fxgraph" / "g").read_bytes() == b"graph"
    env: dict = {}
    bundle.activate(env)
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(bundle.inductor_dir)
    assert env["TRITON_CACHE_DIR"] == str(bundle.inductor_dir / "triton")
    env["TIERLM_CACHE_DIR"] = str(tmp_path / "seeded")
    assert AutotuneStore(root=resolve_root(env)).directory == bundle.autotune_dir == bundle.path / "autotune"
    bundle.release()


def _doctored(tmp_path, name, add) -> Path:
    """An exported archive of one fake bundle, with `add(tar, key)` appending members."""
    root_a = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "a")})
    bundle = _fake_bundle(root_a)
    export_bundles(root_a, tmp_path / "ok.tar.gz")
    out = tmp_path / name
    with tarfile.open(tmp_path / "ok.tar.gz") as src, tarfile.open(out, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
        add(dst, bundle.key)
    return out


def _member(tar, name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("case", ["extra py", "extra so", "symlink", "hardlink", "unlisted dir", "twice"])
def test_import_refuses_members_the_manifest_does_not_list(tmp_path, case):
    def add(tar, key):
        if case == "extra py":
            _member(tar, f"aot/{key}/evil.py", b"print('hi')")
        elif case == "extra so":
            _member(tar, f"aot/{key}/inductor/fxgraph/evil.so", b"\x7fELF")
        elif case == "symlink":
            _member(tar, f"aot/{key}/inductor/fxgraph/x", kind=tarfile.SYMTYPE, link="../../../../jit")
        elif case == "hardlink":
            _member(tar, f"aot/{key}/inductor/h", kind=tarfile.LNKTYPE, link=f"aot/{key}/inductor/fxgraph/g")
        elif case == "unlisted dir":
            _member(tar, f"aot/{key}/extra", kind=tarfile.DIRTYPE)
        else:
            _member(tar, f"aot/{key}/inductor/fxgraph/g", b"graph")
    archive = _doctored(tmp_path, "doctored.tar.gz", add)
    root_b = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "b")})
    with pytest.raises(BundleError, match="refusing"):
        import_bundles(root_b, archive)
    assert not [p for p in (tmp_path / "b").rglob("*") if p.name != "aot"]  # nothing installed


def test_import_accepts_directory_members_that_hold_listed_files(tmp_path):
    def add(tar, key):
        for d in ("aot", f"aot/{key}", f"aot/{key}/inductor", f"aot/{key}/inductor/fxgraph"):
            _member(tar, d, kind=tarfile.DIRTYPE)
    archive = _doctored(tmp_path, "dirs.tar.gz", add)
    root_b = resolve_root({"TIERLM_CACHE_DIR": str(tmp_path / "b")})
    assert len(import_bundles(root_b, archive)) == 1
