"""Which files a JIT module is made of: its sources plus every header of ours they include, transitively.

Only ``#include`` lines are read (both ``"..."`` and ``<...>``); a name that resolves to no file in the
including file's directory (quotes only) or in our include directories is a system/tvm-ffi/CUDA header,
whose identity the key covers through tool and library versions instead. Conditional includes are
followed regardless of their condition: hashing one header too many only costs a spurious rebuild.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tierlm.jit.toolchain import CSRC_DIR, INCLUDE_DIR

_INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.MULTILINE)


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", "", text)


def _resolve(name: str, quoted: bool, including: Path, include_dirs: Sequence[Path]) -> Optional[Path]:
    candidates = ([including.parent] if quoted else []) + list(include_dirs)
    for base in candidates:
        path = base / name
        if path.is_file():
            return path.resolve()
    return None


def collect_sources(top: Sequence[Path], include_dirs: Sequence[Path]) -> List[Path]:
    """`top` plus every file of ours they include, transitively; sorted, each once."""
    seen: Dict[Path, None] = {}
    stack = [p.resolve() for p in top]
    while stack:
        path = stack.pop()
        if path in seen:
            continue
        seen[path] = None
        text = _strip_comments(path.read_text(encoding="utf-8", errors="replace"))
        for quote, name in _INCLUDE.findall(text):
            found = _resolve(name.strip(), quote == '"', path, include_dirs)
            if found is not None and found not in seen:
                stack.append(found)
    return sorted(seen)


def logical_name(path: Path, anchors: Sequence[Tuple[str, Path]]) -> str:
    """A machine-independent name for `path`: ``<anchor token>/<relative path>`` (first anchor that holds it)."""
    for token, base in anchors:
        try:
            return f"{token}/{path.relative_to(base).as_posix()}"
        except ValueError:
            continue
    return f"other/{path.name}"


def source_digests(top: Sequence[Path], extra_include_paths: Sequence[Path]) -> Dict[str, str]:
    """{logical name: sha256} over the sources and all of our headers they reach."""
    include_dirs = [INCLUDE_DIR, *extra_include_paths]
    anchors: List[Tuple[str, Path]] = [("include", INCLUDE_DIR), ("csrc", CSRC_DIR)]
    anchors += [(f"extra{i}", p.resolve()) for i, p in enumerate(extra_include_paths)]
    anchors += [(f"src{i}", p.resolve().parent) for i, p in enumerate(top)]
    digests: Dict[str, str] = {}
    for path in collect_sources(top, include_dirs):
        name = logical_name(path, anchors)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digests.setdefault(name, digest) != digest:  # two files with one logical name: keep both
            digests[f"{name}#{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"] = digest
    return digests
