"""Point every third-party compile cache under the TierLM root, before torch is imported.

`tierlm/__init__.py` calls `configure_environment()` first thing. Why so early: Inductor's
``cache_dir()`` writes its default (``$TMPDIR/torchinductor_<user>``) into ``os.environ`` the first time
it runs and then derives Triton's directory from it, so a redirect made after that is silently ignored.

Rules:
- A variable the user set explicitly wins and is left alone. Values TierLM set are recorded in
  ``TIERLM_CACHE_WIRED``, so child processes (which inherit them) recompute rather than mistake them
  for user settings.
- If torch was imported first and Inductor already fixed its directory, one warning names the variable
  and where artifacts will go.
- ``TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS`` defaults to ``0``: torch 2.13 writes precompiled headers
  under ``$TMPDIR/torchinductor_<user>`` whatever ``TORCHINDUCTOR_CACHE_DIR`` says, and rebuilds them in
  every fresh environment, even on a full cache hit. Set it to 1 yourself to get them back.
- ``TRITON_DEFAULT_FP_FUSION`` defaults to ``1``: Triton fuses a multiply and an add into one FMA unless told
  otherwise, and has announced that this default turns off in a later release; the kernels' parity tests,
  tuned launches and measured speeds are all with fusion, so TierLM keeps it until it decides otherwise.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Dict, MutableMapping, Optional

from tierlm.cachedir.root import THIRD_PARTY_VARS, WIRED_VAR, CacheRoot, resolve_root, wired_values

logger = logging.getLogger(__name__)

PCH_VAR = "TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS"
FP_FUSION_VAR = "TRITON_DEFAULT_FP_FUSION"


def planned_environment(root: CacheRoot) -> Dict[str, str]:
    """The third-party variable values TierLM wants for `root` (before user settings are applied)."""
    plan = {}
    for var, (subsystem, suffix) in THIRD_PARTY_VARS.items():
        base = root.locate(subsystem, third_party=False).path
        plan[var] = str(base / suffix) if suffix else str(base)
    return plan


def _fixed_by_torch(var: str, value: str) -> bool:
    """Inductor already ran `cache_dir()` in this process and exported its /tmp default."""
    return (var == "TORCHINDUCTOR_CACHE_DIR" and "torch" in sys.modules
            and os.path.basename(value.rstrip(os.sep)).startswith("torchinductor_"))


def configure_environment(environ: Optional[MutableMapping[str, str]] = None) -> Optional[CacheRoot]:
    """Set the third-party cache variables under the resolved root; idempotent; never raises.

    Returns the resolved root, or None when it could not be resolved (a warning is logged).
    """
    env = os.environ if environ is None else environ
    try:
        root = resolve_root(env)
    except NotADirectoryError as e:  # the message names the variable to fix
        logger.warning("tierlm: %s (until then, third-party caches keep their own defaults)", e)
        return None
    except (OSError, KeyError) as e:
        logger.warning("tierlm: cache root could not be resolved (%s); third-party caches keep their "
                       "own defaults. Set TIERLM_CACHE_DIR.", e)
        return None
    previous = wired_values(env)
    try:
        state = json.loads(env.get(WIRED_VAR, "") or "{}")
    except ValueError:
        state = {}
    warned = set(state.get("warned", [])) if state.get("pid") == os.getpid() else set()
    wired: Dict[str, str] = {}
    for var, value in planned_environment(root).items():
        current = env.get(var)
        if current and current != previous.get(var):
            if _fixed_by_torch(var, current) and var not in warned:
                logger.warning(
                    "tierlm: torch was imported before tierlm and Inductor already fixed %s=%s; "
                    "Inductor artifacts will go there, not under %s. Import tierlm before torch, or set %s.",
                    var, current, value, var)
                warned.add(var)
            continue
        env[var] = value
        wired[var] = value
    env.setdefault(PCH_VAR, "0")
    env.setdefault(FP_FUSION_VAR, "1")
    env[WIRED_VAR] = json.dumps({"vars": wired, "pid": os.getpid(), "warned": sorted(warned)},
                                sort_keys=True)
    if root.read_only and root.overlay is None:
        logger.warning("tierlm: cache root %s is read-only and no writable overlay was found; "
                       "set TIERLM_CACHE_OVERLAY_DIR to a writable directory.", root.path)
    return root
