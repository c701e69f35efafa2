"""Builds are cached under the root, keyed by content, shared across processes, memoised per process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jit.conftest import HERE, PROBE_DIR, requires_cxx
from tierlm.cachedir import CacheMissError
from tierlm.jit import build_jit, load_jit, make_cpp_args
from tierlm.jit.add_constant import add_constant
from tierlm.jit.clangd import clangd_config, write_clangd
from tierlm.jit.loader import key_factors, make_spec
from tierlm.jit.toolchain import INCLUDE_DIR, resolve_toolchain

REPO = HERE.parent.parent
HEADER_KERNEL = """#pragma once
#include "probe_value.h"
#include <tierlm/utils.h>
inline int64_t probe_value() { return kProbeValue; }
"""


def _child(extra_env=None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), **(extra_env or {}))
    out = subprocess.run([sys.executable, str(HERE / "_load_worker.py")], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(out.stdout)


@requires_cxx
def test_second_process_loads_from_cache_without_compiling(jit_cache_root):
    import torch
    add_constant(torch.ones(3, dtype=torch.int32), 7)  # make sure this process built (or found) it
    first = _child()
    manifest = Path(first["path"]) / "manifest.json"
    mtime = manifest.stat().st_mtime_ns
    second = _child({"TIERLM_CACHE_REQUIRE_HIT": "1"})  # a miss would raise instead of compiling
    assert second == {"hit": True, "path": first["path"], "ok": True}
    assert manifest.stat().st_mtime_ns == mtime
    assert Path(first["path"]).parent.parent.name.startswith("cpu-")  # <root>/jit/<target>/<name>/<key>
    assert Path(first["path"]).is_relative_to(jit_cache_root / "jit")


@requires_cxx
def test_concurrent_processes_build_once():
    """Two processes missing the same key at once: one compiles, the other waits and loads its entry."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, str(HERE / "_load_worker.py"), "-41"], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(r["hit"] for r in results) == [False, True]
    assert results[0]["path"] == results[1]["path"] and all(r["ok"] for r in results)


@requires_cxx
def test_changing_an_included_header_rebuilds(tmp_path):
    src = tmp_path / "kernels"
    src.mkdir()
    (src / "probe_kernel.h").write_text(HEADER_KERNEL)
    (src / "probe_value.h").write_text("#pragma once\n#include <cstdint>\nconstexpr int64_t kProbeValue = 1;\n")
    kwargs = dict(cpp_files=[str(src / "probe_kernel.h")], cpp_wrappers=[("value", "probe_value")])
    a = build_jit("header_probe", **kwargs)
    assert not a.hit and "src0/probe_value.h" in a.factors["sources"]
    assert build_jit("header_probe", **kwargs).hit
    (src / "probe_value.h").write_text("#pragma once\n#include <cstdint>\nconstexpr int64_t kProbeValue = 2;\n")
    b = build_jit("header_probe", **kwargs)
    assert not b.hit and b.key != a.key
    assert load_jit("header_probe", **kwargs).value() == 2


def test_key_covers_contents_not_paths(tmp_path):
    """Same sources in two directories -> same key; tool versions, flags, args and arch are factors."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(PROBE_DIR / "probe.h", tmp_path / d / "probe.h")
    tc = resolve_toolchain(False)
    fa = key_factors(make_spec("p", cpp_files=[str(tmp_path / "a" / "probe.h")]), tc)
    fb = key_factors(make_spec("p", cpp_files=[str(tmp_path / "b" / "probe.h")]), tc)
    assert fa == fb
    assert str(tmp_path) not in json.dumps(fa)
    assert {"include/tierlm/utils.h", "include/tierlm/tensor.h"} <= set(fa["sources"])
    assert fa["cxx"] and fa["tvm_ffi"] and fa["target"].startswith("cpu-")
    fc = key_factors(make_spec("p", 3, cpp_files=[str(tmp_path / "a" / "probe.h")], extra_cflags=["-DX=1"]), tc)
    assert fc["template_args"] == ["3"] and "-DX=1" in fc["cxx_flags"]


def test_cuda_factors_include_nvcc_and_arch():
    from tierlm.jit.toolchain import find_nvcc
    if find_nvcc() is None:
        pytest.skip("no nvcc")
    spec = make_spec("k", cuda_files=["add_constant.cuh"], cuda_arch="9.0a")
    f = key_factors(spec, resolve_toolchain(True))
    assert f["nvcc"].startswith("Cuda compilation tools") and f["target"].startswith("sm90a-")
    assert "-gencode=arch=compute_90a,code=sm_90a" in f["cuda_flags"]


def test_require_hit_turns_a_miss_into_an_error(monkeypatch):
    monkeypatch.setenv("TIERLM_CACHE_REQUIRE_HIT", "1")
    with pytest.raises(CacheMissError, match="add_constant_cpu"):
        build_jit("add_constant_cpu", "12345", cpp_files=["add_constant_cpu.h"],
                  cpp_wrappers=[("add_constant", "tierlm_kernels::add_constant_cpu<12345>")])


@requires_cxx
def test_load_is_memoised_and_build_errors_are_readable(tmp_path):
    kw = dict(cpp_files=["add_constant_cpu.h"], cpp_wrappers=[("add_constant", "tierlm_kernels::add_constant_cpu<7>")])
    assert load_jit("add_constant_cpu", "7", **kw) is load_jit("add_constant_cpu", "7", **kw)
    bad = tmp_path / "bad.h"
    bad.write_text("inline int broken() { return undefined_symbol_xyz; }\n")
    from tierlm.jit import JitBuildError
    with pytest.raises(JitBuildError, match="undefined_symbol_xyz"):
        build_jit("bad_kernel", cpp_files=[str(bad)], cpp_wrappers=[("broken", "broken")])


def test_make_cpp_args():
    import torch
    args = make_cpp_args(5, True, torch.bfloat16, -(2 ** 40))
    assert tuple(args) == ("5", "true", "tierlm::bf16_t", "-1099511627776LL")
    assert f"f<{args}>" == "f<5, true, tierlm::bf16_t, -1099511627776LL>"
    with pytest.raises(TypeError):
        make_cpp_args(1.5)


def test_clangd_file(tmp_path):
    text = clangd_config()
    assert f"-I{INCLUDE_DIR}" in text and "tvm_ffi" in text
    out = subprocess.run([sys.executable, "-m", "tierlm.jit", "--output", str(tmp_path)], check=True,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert (tmp_path / ".clangd").read_text() == text and "wrote" in out.stdout
    assert write_clangd(tmp_path / "x.yaml").name == "x.yaml"


@requires_cxx
@pytest.mark.parametrize("damage", ["empty manifest", "entry is a file"])
def test_damaged_entry_is_quarantined_and_rebuilt(damage):
    """A JIT entry with a broken manifest (or a file in its place) is rebuilt, not an error forever."""
    kw = dict(cpp_files=["add_constant_cpu.h"],
              cpp_wrappers=[("add_constant", "tierlm_kernels::add_constant_cpu<-43>")])
    first = build_jit("add_constant_cpu", "-43", **kw)
    first.release()
    if damage == "empty manifest":
        (first.path / "manifest.json").write_text("")
    else:
        shutil.rmtree(first.path)
        first.path.write_text("")
    again = build_jit("add_constant_cpu", "-43", **kw)
    assert not again.hit and again.path == first.path and (again.path / "add_constant_cpu.so").is_file()
    assert build_jit("add_constant_cpu", "-43", **kw).hit


def test_clangd_output_with_a_trailing_slash_is_a_directory(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    target = tmp_path / "new" / "dir"
    out = subprocess.run([sys.executable, "-m", "tierlm.jit", "--output", f"{target}/"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert (target / ".clangd").is_file() and out.stdout.strip() == f"wrote {target / '.clangd'}"
    (tmp_path / "file").write_text("")
    bad = subprocess.run([sys.executable, "-m", "tierlm.jit", "--output", f"{tmp_path / 'file'}/sub/"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "--output" in bad.stderr


def test_generated_clangd_is_ignored_by_git():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "check-ignore", "-q", ".clangd"], cwd=REPO)
    assert out.returncode == 0, ".clangd (written by `python -m tierlm.jit`) must be in .gitignore"


@requires_cxx
def test_failed_build_is_kept_under_the_cache_root(tmp_path, monkeypatch, jit_cache_root):
    from tierlm.jit import JitBuildError
    monkeypatch.setenv("TIERLM_JIT_KEEP_FAILED", "1")
    bad = tmp_path / "bad_kept.h"
    bad.write_text("inline int broken_kept() { return undefined_symbol_kept; }\n")
    with pytest.raises(JitBuildError, match="build directory kept at") as err:
        build_jit("bad_kept", cpp_files=[str(bad)], cpp_wrappers=[("broken", "broken_kept")])
    kept = Path(str(err.value).rsplit("kept at ", 1)[1].rstrip(")"))
    assert kept.parent == jit_cache_root / "jit" / ".failed" and kept.name.startswith("bad_kept-")
    assert (kept / "wrap_cpp.cc").is_file() and "undefined_symbol_kept" in (kept / "build.log").read_text()
