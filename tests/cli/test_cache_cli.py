"""`tierlm cache ...`: operator-facing output, confirmations, exit codes and error lines."""
from __future__ import annotations

import io
import re
import sys

import pytest

from tierlm.cachedir import AotBundle, AutotuneStore, get_or_build, resolve_root
from tierlm.cli.main import main


@pytest.fixture
def root_dir(tmp_path, monkeypatch):
    for var in ("XDG_CACHE_HOME", "TIERLM_CACHE_READONLY", "TIERLM_CACHE_MAX_GB", "TIERLM_AUTOTUNE_CACHE",
                "TIERLM_CACHE_REQUIRE_HIT", "TRITON_CACHE_DIR", "TIERLM_JIT_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TIERLM_CACHE_DIR", str(tmp_path / "root"))
    return tmp_path / "root"


def _entry(name="cpu/rms", size=3000, factors=None):
    e = get_or_build("jit", name, factors or {"src": name}, lambda s: (s / "k.so").write_bytes(b"k" * size))
    e.release()
    return e.path


def test_path_table_and_single_subsystem(root_dir, capsys, monkeypatch):
    monkeypatch.setenv("TIERLM_JIT_CACHE_DIR", str(root_dir.parent / "fast"))
    assert main(["cache", "path"]) == 0
    out = capsys.readouterr().out
    assert f"root:      {root_dir}  (from TIERLM_CACHE_DIR)" in out
    assert "TIERLM_JIT_CACHE_DIR" in out and str(root_dir / "inductor") in out
    assert main(["cache", "path", "jit"]) == 0
    assert capsys.readouterr().out.strip() == str(root_dir.parent / "fast")


def test_path_reports_user_third_party_variable(root_dir, capsys, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(root_dir.parent / "mine"))
    assert main(["cache", "path"]) == 0
    out = capsys.readouterr().out
    assert "TRITON_CACHE_DIR (set by user)" in out
    assert main(["cache", "path", "triton"]) == 0
    assert capsys.readouterr().out.strip() == str(root_dir.parent / "mine")


def test_ls_and_du_are_human_readable(root_dir, capsys):
    _entry(size=3 * 1024 * 1024)
    AutotuneStore().save("mm", {"arch": "cpu"}, {"block": 1})
    assert main(["cache", "ls"]) == 0
    out = capsys.readouterr().out
    assert "jit" in out and "cpu/rms" in out and "MiB" in out and "just now" in out
    assert "autotune: 1 canonical result(s), 0 run(s)" in out
    assert main(["cache", "du"]) == 0
    out = capsys.readouterr().out
    assert "3.0 MiB" in out and "total:" in out


def test_gc_needs_a_budget_and_reports(root_dir, capsys):
    _entry("a")
    assert main(["cache", "gc"]) == 2
    assert "no budget" in capsys.readouterr().err
    assert main(["cache", "gc", "--max-size", "lots"]) == 2
    assert "--max-size lots: not a size" in capsys.readouterr().err
    assert main(["cache", "gc", "--max-size", "0", "--dry-run"]) == 0
    assert "would remove 1 item(s)" in capsys.readouterr().out
    assert main(["cache", "gc", "--max-size", "0", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 item(s)" in out and "-> 0 B" in out


def test_gc_size_without_a_unit_is_refused(root_dir, capsys):
    path = _entry("a")
    assert main(["cache", "gc", "--max-size", "20", "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tierlm cache: error: --max-size 20: no unit") and "20G" in err and path.exists()
    assert main(["cache", "gc", "--max-size", "20B", "--dry-run"]) == 0  # explicit bytes are fine
    assert "would remove 1 item(s)" in capsys.readouterr().out


def test_gc_asks_before_deleting_like_clear(root_dir, capsys, monkeypatch):
    path = _entry("a")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["cache", "gc", "--max-size", "1K"]) == 2
    assert "refusing to remove 1 item(s)" in capsys.readouterr().err and path.exists()

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stdin", Tty(""))
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["cache", "gc", "--max-size", "1K"]) == 1 and path.exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["cache", "gc", "--max-size", "1K"]) == 0 and not path.exists()
    assert main(["cache", "gc", "--max-size", "1K"]) == 0  # nothing to remove: no question
    assert "removed 0 item(s)" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["abc", "inf", "nan", "-1"])
def test_malformed_budget_variable_is_one_line_naming_it(root_dir, capsys, monkeypatch, value):
    monkeypatch.setenv("TIERLM_CACHE_MAX_GB", value)
    for cmd in (["cache", "gc", "--dry-run"], ["cache", "du"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert err == f"tierlm cache: error: TIERLM_CACHE_MAX_GB={value!r} is not a size in GiB (e.g. 20 or 0.5)\n"
    _entry("b")  # a publish under a malformed budget still works (automatic GC only warns)


def test_gc_names_the_kv_store_not_library_trees(root_dir, capsys):
    (root_dir / "kv" / "ab").mkdir(parents=True)
    (root_dir / "kv" / "ab" / "abcd.kvp").write_bytes(b"p" * 20000)
    assert main(["cache", "gc", "--max-size", "1K", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "still over budget" in out and "kv 20.0 KiB (TierLM's L3 KV store" in out
    assert "library-managed" not in out and "inductor" not in out


def test_verify_exit_status_and_quarantine(root_dir, capsys):
    path = _entry()
    assert main(["cache", "verify"]) == 0
    assert "1 ok, 0 corrupt" in capsys.readouterr().out
    data = bytearray((path / "k.so").read_bytes())
    data[7] ^= 0xFF
    (path / "k.so").write_bytes(bytes(data))
    assert main(["cache", "verify"]) == 1
    out = capsys.readouterr().out
    assert "CORRUPT jit" in out and "k.so: sha256 mismatch" in out and "quarantined" in out
    assert not path.exists()


def test_clear_refuses_without_tty_and_asks_with_one(root_dir, capsys, monkeypatch):
    path = _entry()
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["cache", "clear", "jit"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tierlm cache: error: refusing to delete jit cache") and "--yes" in err
    assert path.exists()

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stdin", Tty(""))
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["cache", "clear", "jit"]) == 1 and path.exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["cache", "clear", "jit"]) == 0 and not path.exists()
    assert "cleared jit cache" in capsys.readouterr().out


def test_clear_yes_everything_keeps_entries_in_use(root_dir, capsys):
    held = get_or_build("jit", "held", {"v": 1}, lambda s: (s / "f").write_text("x"))
    _entry("other")
    AutotuneStore().save("mm", {"arch": "cpu"}, {"block": 1})
    assert main(["cache", "clear", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "kept 1 entry in use" in out
    assert held.path.exists() and (held.path / "f").read_text() == "x"
    assert not (root_dir / "autotune").exists() or not list((root_dir / "autotune").rglob("*.json"))
    assert [p.name for p in (root_dir / "jit").iterdir() if not p.name.startswith(".")] == ["held"]


def test_promote_run(root_dir, capsys, monkeypatch):
    monkeypatch.setenv("TIERLM_AUTOTUNE_CACHE", "0")
    run = AutotuneStore().save("mm", {"arch": "cpu"}, {"block": 7})
    monkeypatch.delenv("TIERLM_AUTOTUNE_CACHE")
    assert main(["cache", "promote", run.name]) == 0
    assert "promoted" in capsys.readouterr().out
    assert AutotuneStore().load("mm", {"arch": "cpu"}) == {"block": 7}
    assert main(["cache", "promote", "nope.json"]) == 2
    assert "no autotune run" in capsys.readouterr().err


def test_export_import_errors_are_one_line(root_dir, tmp_path, capsys, monkeypatch):
    assert main(["cache", "export", "-o", str(tmp_path / "x.tar.gz")]) == 2
    assert "no sealed AOT bundle" in capsys.readouterr().err
    assert main(["cache", "import", str(tmp_path / "missing.tar.gz")]) == 2
    assert "no such file" in capsys.readouterr().err
    bundle = AotBundle.open({"model": "m"})
    (bundle.path / "inductor").mkdir()
    (bundle.path / "inductor" / "g").write_text("graph")
    bundle.seal()
    assert main(["cache", "export", "-o", str(tmp_path / "x.tar.gz")]) == 0
    assert "exported 1 bundle(s)" in capsys.readouterr().out
    monkeypatch.setenv("TIERLM_CACHE_DIR", str(tmp_path / "other"))
    assert main(["cache", "import", str(tmp_path / "x.tar.gz")]) == 0
    assert "imported 1 bundle(s)" in capsys.readouterr().out
    assert main(["cache", "import", str(tmp_path / "x.tar.gz")]) == 0
    assert "already present" in capsys.readouterr().out
    assert resolve_root().subsystem_dir("aot") == tmp_path / "other" / "aot"
    assert (tmp_path / "other" / "aot" / bundle.key / "inductor" / "g").read_text() == "graph"


def test_verify_and_ls_report_a_damaged_entry(root_dir, capsys):
    path = _entry()
    (path / "manifest.json").write_text("{not json")
    assert main(["cache", "ls", "jit"]) == 0
    assert "damaged: manifest.json is not valid JSON" in capsys.readouterr().out
    assert main(["cache", "verify", "--no-fix"]) == 1
    out = capsys.readouterr().out
    assert f"CORRUPT jit {path}: manifest.json is not valid JSON" in out and "0 ok, 1 corrupt" in out
    assert main(["cache", "verify"]) == 1 and not path.exists()
    assert "quarantined to" in capsys.readouterr().out


def test_root_that_is_a_file_is_refused_and_nothing_is_cleared(root_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    overlay = tmp_path / "home" / ".cache" / "tierlm-overlay" / "jit"
    overlay.mkdir(parents=True)
    (overlay / "keep").write_text("x")
    root_dir.write_text("a file, not a directory")
    assert main(["cache", "clear", "--yes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"tierlm cache: error: TIERLM_CACHE_DIR={root_dir} is not a directory; "
                   "point TIERLM_CACHE_DIR at a directory")
    assert (overlay / "keep").exists() and root_dir.read_text() == "a file, not a directory"


def test_clear_reports_only_the_space_it_freed(root_dir, capsys):
    held = get_or_build("jit", "held", {"v": 1}, lambda s: (s / "f").write_bytes(b"h" * 40000))
    _entry("other", size=3000)
    assert main(["cache", "clear", "jit", "--yes"]) == 0
    out = capsys.readouterr().out
    freed = re.search(r"cleared jit cache: freed ([0-9.]+) KiB; kept 1 entry in use", out)
    assert freed and float(freed.group(1)) < 40, out  # the held entry's 40000 bytes were not freed
    held.release()


@pytest.mark.parametrize("subsystem", ["kv", "inductor"])
def test_ls_and_verify_accept_subsystems_without_entries(root_dir, capsys, subsystem):
    (root_dir / subsystem).mkdir(parents=True)
    (root_dir / subsystem / "page.kvp").write_bytes(b"p" * 100)
    assert main(["cache", "ls", subsystem]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{subsystem}: ") and "1 file(s)" in out
    assert main(["cache", "verify", subsystem]) == 0
    assert "nothing to verify" in capsys.readouterr().out


def test_ls_autotune_names_canonical_results(root_dir, capsys):
    path = AutotuneStore().save("mm", {"arch": "cpu"}, {"block": 1})
    assert main(["cache", "ls", "autotune"]) == 0
    out = capsys.readouterr().out
    assert f"result mm/{path.name}" in out and str(path) in out


def test_promote_keeps_the_replaced_result_as_a_run(root_dir, capsys, monkeypatch):
    canonical = AutotuneStore().save("mm", {"arch": "cpu"}, {"block": 1})
    before = canonical.read_bytes()
    monkeypatch.setenv("TIERLM_AUTOTUNE_CACHE", "0")
    run = AutotuneStore().save("mm", {"arch": "cpu"}, {"block": 7})
    monkeypatch.delenv("TIERLM_AUTOTUNE_CACHE")
    assert main(["cache", "promote", run.name]) == 0
    out = capsys.readouterr().out
    backups = [r for r in AutotuneStore().runs() if r != run]
    assert len(backups) == 1 and backups[0].read_bytes() == before and backups[0].name in out
    assert main(["cache", "promote", backups[0].name]) == 0  # and back again
    assert AutotuneStore().load("mm", {"arch": "cpu"}) == {"block": 1}


def test_export_and_import_name_the_flag_or_file(root_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for target in (str(out_dir), str(out_dir) + "/"):
        assert main(["cache", "export", "-o", target]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tierlm cache: error: --output {target}: is a directory") and err.count("\n") == 1
    missing = tmp_path / "nope" / "x.tar.gz"
    assert main(["cache", "export", "-o", str(missing)]) == 2
    assert capsys.readouterr().err.startswith(f"tierlm cache: error: --output {missing}: directory")
    assert main(["cache", "import", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tierlm cache: error: ARCHIVE {out_dir}: is a directory") and "export" in err
    assert main(["cache", "import", str(tmp_path / "missing.tar.gz")]) == 2
    assert capsys.readouterr().err.strip().endswith("missing.tar.gz: no such file")
    junk = tmp_path / "junk.tar.gz"  # a file that only claims to be an archive: one line, what to give instead
    junk.write_bytes(b"not an archive at all")
    assert main(["cache", "import", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tierlm cache: error: cannot read {junk}: not a tar archive") and err.count("\n") == 1
