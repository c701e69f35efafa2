"""docs/cache.md documents what operators and kernel authors rely on: damaged entries, what a bundle
import refuses, and the autotune Python API (every method it names exists)."""
from __future__ import annotations

import re
from pathlib import Path

from tierlm.cachedir import AutotuneStore

DOC = (Path(__file__).resolve().parent.parent.parent / "docs" / "cache.md").read_text()


def test_damaged_entries_and_import_refusals_are_documented():
    assert "**Damaged entries**" in DOC
    damaged = DOC[DOC.index("**Damaged entries**"):]
    assert all(w in damaged[:900] for w in ("missing", "empty", "not JSON", "wrong", "quarantine", "rebuilt"))
    refusals = DOC[DOC.index("Before anything\nis extracted"):]
    assert all(w in refusals[:1200] for w in ("does not list", "symlink", "hard link", "sha256"))


def test_autotune_python_api_is_documented_and_exists():
    section = DOC[DOC.index("## Autotune results"):DOC.index("## Portable AOT bundles")]
    documented = set(re.findall(r"(?:^- |/ |; |\. )`(\w+)\(", section, re.MULTILINE))
    assert {"get_or_tune", "promote", "promote_with_backup", "load", "save", "results", "runs"} <= documented
    for name in documented:
        assert callable(getattr(AutotuneStore, name, None)), f"docs/cache.md names AutotuneStore.{name}"
