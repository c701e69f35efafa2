"""Reading an exported bundle archive: only what the bundles' manifests list gets onto the disk.

An archive from `export_bundles` holds ``aot/<key>/manifest.json`` and exactly the files that manifest
lists (``aot/<key>/<path>``). Before anything is extracted, every member is checked against that
shape: a regular file must be a manifest or be listed, with the listed size, in its bundle's manifest
(its sha256 is checked once extracted); a directory must be ``aot``, a bundle, or hold a listed file.
Everything else is refused: unlisted files (they would be installed and then pass `verify`, which
only checks listed files), symlinks and hard links (harmless inside the staging directory, they can
point elsewhere in the root once the bundle is installed), devices, absolute or ``..`` paths, and a
name given twice (the second copy would silently replace the first).
"""
from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path
from typing import Any, Dict, Set

from tierlm.cachedir.manifest import MANIFEST_NAME, parse_manifest

_TOP = "aot"


class ArchiveRefused(Exception):
    """A member of the archive is not acceptable; the message names it and says why."""


def _split(name: str) -> tuple:
    norm = posixpath.normpath(name)
    parts = tuple(norm.split("/"))
    if name.startswith("/") or norm != name.rstrip("/") or ".." in parts or "." in parts or parts[0] != _TOP:
        raise ArchiveRefused(f"refusing member {name!r}: expected a path aot/<key>/...")
    return parts


def _manifests(tar: tarfile.TarFile) -> Dict[str, Dict[str, Any]]:
    """{bundle key: parsed manifest} for each ``aot/<key>/manifest.json`` regular-file member."""
    found: Dict[str, Dict[str, Any]] = {}
    for member in tar.getmembers():
        parts = member.name.split("/")
        if member.isfile() and len(parts) == 3 and parts[0] == _TOP and parts[2] == MANIFEST_NAME:
            handle = tar.extractfile(member)
            manifest, problem = parse_manifest(handle.read() if handle is not None else b"")
            if manifest is None:
                raise ArchiveRefused(f"bundle {parts[1][:12]}: {problem}")
            found[parts[1]] = manifest
    return found


def check_members(tar: tarfile.TarFile) -> None:
    """Raise `ArchiveRefused` for the first member the bundles' manifests do not account for."""
    manifests = _manifests(tar)
    allowed_dirs: Set[tuple] = {(_TOP,)}
    for key, manifest in manifests.items():
        allowed_dirs.add((_TOP, key))
        for rel in manifest["files"]:
            parts = rel.split("/")
            allowed_dirs.update((_TOP, key, *parts[:i]) for i in range(1, len(parts)))
    seen: Set[str] = set()
    for member in tar.getmembers():
        parts = _split(member.name)
        where = "/".join(parts)
        if where in seen:
            raise ArchiveRefused(f"refusing member {member.name!r}: it appears twice")
        seen.add(where)
        if member.issym() or member.islnk():
            raise ArchiveRefused(f"refusing link {member.name!r} -> {member.linkname!r}: bundles hold no links")
        if member.isdir():
            if parts not in allowed_dirs:
                raise ArchiveRefused(f"refusing directory {member.name!r}: no file of a manifest is in it")
            continue
        if not member.isfile():
            raise ArchiveRefused(f"refusing member {member.name!r}: not a regular file or directory")
        if len(parts) < 3 or parts[1] not in manifests:
            raise ArchiveRefused(f"refusing member {member.name!r}: not inside a bundle with a manifest")
        rel = "/".join(parts[2:])
        if rel == MANIFEST_NAME:
            continue
        listed = manifests[parts[1]]["files"].get(rel)
        if listed is None:
            raise ArchiveRefused(f"refusing member {member.name!r}: not listed in bundle {parts[1][:12]}'s manifest")
        if listed["size"] != member.size:
            raise ArchiveRefused(f"refusing member {member.name!r}: {member.size} bytes, its manifest says "
                                 f"{listed['size']}")


def extract_checked(tar: tarfile.TarFile, dest: Path) -> None:
    """`check_members`, then extract into `dest` (which must not hold anything else yet)."""
    check_members(tar)
    if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: a second line of defence
        tar.extractall(dest, filter="data")
    else:
        tar.extractall(dest)  # every member was checked above: regular files and directories, safe names
