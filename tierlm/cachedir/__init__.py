"""The one cache root for every compiled artifact. Imports no torch (``tierlm cache`` stays fast).

Public API (everything else in the package is an implementation detail):

Root and layout
    ``resolve_root(environ=None) -> CacheRoot``   resolved root, source, read-only flag, overlay
    ``cache_root() -> Path``                      the root path
    ``subsystem_dir(name, environ=None) -> Path`` where a subsystem writes (overrides/overlay applied)
    ``SUBSYSTEMS``                                 triton, inductor, aot, jit, autotune, cuda, kv, ...
    ``configure_environment(environ=None)``        wire third-party cache variables (done by ``import tierlm``)

Entries (any TierLM-owned artifact: JIT builds, converted weights, ...)
    ``get_or_build(subsystem, name, key_factors, build_fn, root=None, require_hit=None) -> CacheEntry``
        ``build_fn(staging_dir: Path)`` writes the files; returns the published, checked entry
        (``entry.path``; ``os.fspath(entry)`` works). Exactly one concurrent builder per key.
    ``lookup(subsystem, name, key_factors, root=None) -> CacheEntry | None``
    ``entry_key(subsystem, name, key_factors) -> str``
    ``CacheMissError``                             raised on a miss with ``TIERLM_CACHE_REQUIRE_HIT=1``

Autotune
    ``AutotuneStore(root=None, reuse=None, device=None)`` with ``load / save / get_or_tune / results / runs /
    promote / promote_with_backup``

AOT bundles
    ``AotBundle.open(key_factors, root=None, device=None)`` then ``activate()``, compile, ``seal()``
    ``export_bundles(root, out_file, keys=()) / import_bundles(root, archive, force=False)``, ``BundleError``

Maintenance
    ``collect_garbage(root, max_bytes, dry_run=False) -> GcReport``
    ``tierlm.cachedir.budget``: ``budget_from_env()`` (``TIERLM_CACHE_MAX_GB``), ``parse_budget(text)``
    ``verify_root(root, subsystem=None, fix=True) -> list[VerifyResult]``
    ``iter_entries(root, subsystem=None)``, ``disk_usage(root)``, ``format_bytes``, ``parse_size``
"""
from tierlm.cachedir.autotune import AutotuneStore
from tierlm.cachedir.bundle import AotBundle, BundleError, export_bundles, import_bundles
from tierlm.cachedir.entry import CacheEntry, CacheMissError, entry_key, get_or_build, lookup
from tierlm.cachedir.env import configure_environment
from tierlm.cachedir.fingerprint import environment_fingerprint
from tierlm.cachedir.fsutil import format_bytes, parse_size
from tierlm.cachedir.gc import GcReport, collect_garbage, disk_usage
from tierlm.cachedir.inventory import EntryInfo, iter_entries
from tierlm.cachedir.root import SUBSYSTEMS, CacheRoot, SubsystemLocation, cache_root, resolve_root, subsystem_dir
from tierlm.cachedir.verify import VerifyResult, verify_root

__all__ = [
    "AotBundle", "AutotuneStore", "BundleError", "CacheEntry", "CacheMissError", "CacheRoot", "EntryInfo",
    "GcReport", "SUBSYSTEMS", "SubsystemLocation", "VerifyResult", "cache_root", "collect_garbage",
    "configure_environment", "disk_usage", "entry_key", "environment_fingerprint", "export_bundles",
    "format_bytes", "get_or_build", "import_bundles", "iter_entries", "lookup", "parse_size",
    "resolve_root", "subsystem_dir", "verify_root",
]
