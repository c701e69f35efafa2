"""docs/jit_kernels.md stays usable: its listings run as shown and the C++ names it gives exist."""
from __future__ import annotations

import re
from pathlib import Path

from tierlm.jit.toolchain import INCLUDE_DIR

REPO = Path(__file__).resolve().parent.parent.parent
DOC = (REPO / "docs" / "jit_kernels.md").read_text()
HEADERS = "\n".join(p.read_text() for p in sorted((INCLUDE_DIR / "tierlm").glob("*.h")))


def _block_after(marker: str, lang: str) -> str:
    start = DOC.index(marker)
    m = re.compile(rf"```{lang}\n(.*?)```", re.DOTALL).search(DOC, start)
    assert m is not None, f"no {lang} listing after {marker!r}"
    return m.group(1)


def test_add_constant_listing_runs_as_shown():
    namespace: dict = {"__name__": "doc_listing"}
    exec(compile(_block_after("**2. Expose it to Python**", "python"), "jit_kernels.md", "exec"), namespace)
    assert callable(namespace["add_constant"]) and callable(namespace["_module"])


def _declared() -> set:
    """Classes, structs and functions defined in our headers."""
    names = set(re.findall(r"\b(?:class|struct)\s+(\w+)", HEADERS))
    names |= set(re.findall(r"\b(\w+)\s*\([^;{}]*\)\s*(?:const\s*)?(?:->[^{;]*)?\{", HEADERS))
    return names


def _table_rows(header: str) -> list:
    lines = DOC[DOC.index(header):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_helpers_used_by_the_example_kernels_are_documented():
    csrc = INCLUDE_DIR.parent / "csrc"
    used = set()
    for name in ("add_constant_cpu.h", "add_constant.cuh"):
        used |= set(re.findall(r"\b([A-Za-z_]\w*)\s*[<({]", (csrc / name).read_text()))
    ours = used & _declared()
    assert {"same_dtype", "DTypeOf", "TensorMatcher", "LaunchKernel", "data_ptr"} <= ours
    missing = sorted(n for n in ours if not re.search(rf"`[^`]*\b{n}\b", DOC))
    assert not missing, f"used by the example but not described in docs/jit_kernels.md: {missing}"


def test_sglang_table_maps_onto_helpers_that_exist():
    rows = _table_rows("| SGLang |")
    sglang = {re.findall(r"`([^`(]+)", r.split("|")[1])[0] for r in rows}
    assert {"host::RuntimeCheck", "RuntimeDeviceCheck", "LaunchKernel::resolve_device"} <= sglang
    declared = _declared()
    for row in rows:
        called = re.findall(r"`([A-Za-z_]\w*)(?:\(|::)", row.split("|")[3])  # helpers, not Python/CUDA names
        assert called
        for name in (n for n in called if not n.startswith("cuda")):
            assert name in declared, f"{name} (SGLang table) is not defined in tierlm/jit/include"


def test_kernels_outside_the_package_are_documented():
    listing = _block_after("## Kernels outside the package", "python")
    assert "load_jit(" in listing and "HERE /" in listing and "extra_include_paths" in listing
