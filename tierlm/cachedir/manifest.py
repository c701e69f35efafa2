"""`manifest.json`: what a published directory holds (relative paths, size and sha256 per file).

Entries and bundles both carry one. Paths are relative to the directory and use '/', so a copied or
relocated directory verifies the same. Files named ``.tierlm-*`` (stamps, in-use markers) and the
manifest itself are bookkeeping and are never listed.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from tierlm.cachedir.fsutil import RESERVED_PREFIX, STAGING_PREFIX, TRASH_PREFIX, atomic_write_bytes, iter_files

MANIFEST_NAME = "manifest.json"
ENTRY_FORMAT = "tierlm-entry/1"
BUNDLE_FORMAT = "tierlm-bundle/1"
KNOWN_FORMATS = (ENTRY_FORMAT, BUNDLE_FORMAT)

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's contents."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


_SKIP_PREFIXES = (RESERVED_PREFIX, STAGING_PREFIX, TRASH_PREFIX, ".quarantine")


def _is_bookkeeping(rel: str) -> bool:
    return rel == MANIFEST_NAME or any(part.startswith(_SKIP_PREFIXES) for part in rel.split("/"))


def scan_files(directory: Path, skip_dirs: Tuple[str, ...] = ()) -> Dict[str, Dict[str, Any]]:
    """{relative path: {"size", "sha256"}} for every artifact file under `directory`."""
    files: Dict[str, Dict[str, Any]] = {}
    for path in iter_files(directory):
        if path.is_symlink():
            continue
        rel = path.relative_to(directory).as_posix()
        if _is_bookkeeping(rel) or rel.split("/", 1)[0] in skip_dirs:
            continue
        files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return files


def write_manifest(directory: Path, body: Mapping[str, Any], skip_dirs: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """Hash `directory` and write its manifest (atomically); returns the manifest written."""
    manifest = dict(body)
    manifest["files"] = scan_files(directory, skip_dirs)
    atomic_write_bytes(directory / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


def read_manifest(directory: Path) -> Optional[Dict[str, Any]]:
    """The directory's manifest if it is present, parses and is well-formed; else None."""
    return load_manifest(directory)[0]


def load_manifest(directory: Path) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(manifest, None) when `directory` holds a well-formed manifest, else (None, what is wrong).

    A published directory never lacks a good manifest (publishing is one atomic rename of a complete
    directory), so a reason here means the entry is damaged, not half-written.
    """
    if os.path.islink(directory) or not os.path.isdir(directory):
        return None, "not a directory" if os.path.lexists(directory) else "missing"
    try:
        text = (Path(directory) / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        return None, f"{MANIFEST_NAME} is missing"
    except OSError as e:
        return None, f"{MANIFEST_NAME} is unreadable ({e.strerror})"
    return parse_manifest(text)


def parse_manifest(text: bytes) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """Parse and type-check manifest bytes: (manifest, None) or (None, what is wrong)."""
    if not text.strip():
        return None, f"{MANIFEST_NAME} is empty"
    try:
        data = json.loads(text)
    except ValueError:
        return None, f"{MANIFEST_NAME} is not valid JSON"
    problem = _type_problem(data)
    return (None, f"{MANIFEST_NAME} {problem}") if problem else (data, None)


def _type_problem(data: Any) -> Optional[str]:
    if not isinstance(data, dict):
        return "is not a JSON object"
    if data.get("format") not in KNOWN_FORMATS:
        return f"has an unknown format {data.get('format')!r}"
    for name, kind in (("key", str), ("name", str), ("factors", dict), ("environment", dict)):
        if name in data and not isinstance(data[name], kind):
            return f"field {name!r} is not a {'string' if kind is str else 'JSON object'}"
    files = data.get("files")
    if not isinstance(files, dict):
        return "field 'files' is not a JSON object"
    for rel, meta in files.items():
        if not (isinstance(meta, dict) and type(meta.get("size")) is int and meta["size"] >= 0
                and isinstance(meta.get("sha256"), str)):
            return f"lists {rel!r} without an integer size and a sha256"
    return None


@dataclass(frozen=True)
class VerifyProblem:
    """One mismatch between a manifest and the files on disk (missing file, wrong size or hash)."""

    path: str
    problem: str


def check_files(directory: Path, manifest: Mapping[str, Any], full: bool = True) -> List[VerifyProblem]:
    """Compare files on disk with `manifest`: sizes always, sha256 too when `full`. Empty list = intact."""
    problems: List[VerifyProblem] = []
    for rel, meta in sorted(manifest.get("files", {}).items()):
        if rel.startswith("/") or ".." in rel.split("/"):
            problems.append(VerifyProblem(rel, "path escapes the directory"))
            continue
        path = directory / rel
        try:
            size = os.stat(path).st_size
        except OSError:
            problems.append(VerifyProblem(rel, "missing"))
            continue
        if size != meta.get("size"):
            problems.append(VerifyProblem(rel, f"size {size} != {meta.get('size')}"))
        elif full and sha256_file(path) != meta.get("sha256"):
            problems.append(VerifyProblem(rel, "sha256 mismatch"))
    return problems


def manifest_bytes(manifest: Mapping[str, Any]) -> int:
    """Sum of file sizes recorded in a manifest."""
    return sum(int(m.get("size", 0)) for m in manifest.get("files", {}).values())
