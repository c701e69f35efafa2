"""Environment fingerprint recorded with autotune results and AOT bundles, read without importing torch.

Versions come from installed package metadata. The device (GPU name, arch such as ``sm90``) is only
known to code that has torch loaded, so callers pass it in.
"""
from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any, Dict, Mapping, Optional

# Fields that must match for compiled artifacts to be reused (checked on bundle import).
COMPAT_FIELDS = ("torch", "triton", "python", "machine", "system", "device_arch")


def package_version(name: str) -> Optional[str]:
    """Installed version of a distribution, or None if it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tierlm_version() -> str:
    """TierLM's version (from the package, so it works from a source checkout too)."""
    from tierlm.version import __version__
    return __version__


def environment_fingerprint(device: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Versions and platform that compiled artifacts depend on, plus caller-supplied device facts.

    `device` may carry e.g. ``{"device_name": "NVIDIA H100", "device_arch": "sm90"}``; on CPU pass
    ``{"device_arch": "cpu"}`` or nothing.
    """
    fp: Dict[str, Any] = {
        "tierlm": tierlm_version(),
        "torch": package_version("torch"),
        "triton": package_version("triton"),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "machine": platform.machine(),
        "system": platform.system(),
    }
    fp.update(dict(device or {}))
    fp.setdefault("device_arch", None)
    return fp


def compatibility_problems(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> Dict[str, tuple]:
    """{field: (recorded, current)} for every compatibility field that differs.

    A field the current side does not know (None, e.g. the device arch in a CLI with no GPU probe) is
    not held against the recorded one.
    """
    out = {}
    for name in COMPAT_FIELDS:
        want, have = recorded.get(name), current.get(name)
        if name == "device_arch" and have is None:
            continue
        if want != have:
            out[name] = (want, have)
    return out
