"""`verify`: a flipped byte is found, the entry quarantined, and the next use rebuilds it."""
from __future__ import annotations

from pathlib import Path

from tierlm.cachedir import get_or_build, verify_root


def test_flipped_byte_is_quarantined_and_rebuilt(root):
    calls: list = []

    def build(staging: Path) -> None:
        calls.append(1)
        (staging / "kernel.so").write_bytes(bytes(range(256)) * 16)
    entry = get_or_build("jit", "cpu/k", {"v": 1}, build, root=root)
    entry.release()
    assert all(r.ok for r in verify_root(root))
    data = bytearray((entry.path / "kernel.so").read_bytes())
    data[1000] ^= 0x01
    (entry.path / "kernel.so").write_bytes(bytes(data))
    results = verify_root(root)
    bad = [r for r in results if not r.ok]
    assert len(bad) == 1 and bad[0].problems[0].path == "kernel.so"
    assert bad[0].problems[0].problem == "sha256 mismatch"
    assert bad[0].quarantined_to is not None and bad[0].quarantined_to.exists()
    assert not entry.path.exists()
    again = get_or_build("jit", "cpu/k", {"v": 1}, build, root=root)
    assert len(calls) == 2 and not again.hit
    assert (again.path / "kernel.so").read_bytes() == bytes(range(256)) * 16
    assert all(r.ok for r in verify_root(root))


def test_report_only_and_missing_file(root):
    entry = get_or_build("jit", "m", {"v": 1}, lambda s: (s / "f").write_text("abc"), root=root)
    (entry.path / "f").unlink()
    results = verify_root(root, fix=False)
    assert results[0].problems[0].problem == "missing" and results[0].quarantined_to is None
    assert entry.path.exists()
