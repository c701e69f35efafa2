"""`tierlm cache verify`: re-hash every entry and bundle against its manifest; quarantine the bad ones.

A quarantined entry is out of its key's path, so the next `get_or_build` misses and rebuilds it.
Damaged entries (manifest missing, empty, unparsable or mistyped; a file where the entry directory
should be) are reported and quarantined the same way.
Entries on a read-only root cannot be moved: they are reported, and lookups skip them anyway.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from tierlm.cachedir.inventory import iter_entries, quarantine
from tierlm.cachedir.manifest import VerifyProblem, check_files
from tierlm.cachedir.root import CacheRoot


@dataclass(frozen=True)
class VerifyResult:
    """Outcome for one entry: its problems (empty = intact) and where it was quarantined, if it was."""

    path: Path
    subsystem: str
    problems: List[VerifyProblem]
    quarantined_to: Optional[Path] = None

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems


def verify_root(root: CacheRoot, subsystem: Optional[str] = None, fix: bool = True) -> List[VerifyResult]:
    """Check every entry's files (full sha256); with `fix`, quarantine those that fail."""
    results: List[VerifyResult] = []
    for info in list(iter_entries(root, subsystem)):
        if info.problem is not None:
            problems = [VerifyProblem(info.path.name, info.problem)]
        else:
            problems = check_files(info.path, info.manifest, full=True)
        if not problems and info.manifest.get("key") != info.path.name:
            problems.append(VerifyProblem("manifest.json", "key does not match the directory name"))
        moved = None
        base = root.subsystem_dir(info.subsystem)
        if problems and fix and base in info.path.parents and root.writable(info.subsystem):
            moved = quarantine(info.path, base)  # never inside a read-only root: lookups skip it anyway
        results.append(VerifyResult(info.path, info.subsystem, problems, moved))
    return results
