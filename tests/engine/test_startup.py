"""Start-up helpers: the warm-up request leaves no trace; the compile report counts new kernels."""
from __future__ import annotations

from tests.conftest import CPU_OPTS
from tierlm.config import EngineConfig
from tierlm.engine import startup
from tierlm.engine.engine import Engine


def test_warm_up_leaves_no_cache_entry_or_counter(tiny_qwen3):
    engine = Engine(EngineConfig(model=str(tiny_qwen3), **CPU_OPTS))
    startup.warm_up(engine)
    stats = engine.stats()
    assert stats["kv_used_tokens"] == 0 and stats["kv_cached_tokens"] == 0
    assert stats["generated_tokens_total"] == 0 and stats["requests_total"] == 0
    assert not engine.has_unfinished()
    engine.kv.check_no_leak(engine.live_pages())


def test_compile_report_counts_new_kernel_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    before = startup.compiled_artifacts()
    (tmp_path / "KERNELHASH1").mkdir()
    (tmp_path / "KERNELHASH2").mkdir()
    (tmp_path / "stray-file").write_text("x")
    assert startup.report_compiles(before, 0.0)["new_kernels"] == 2
    assert startup.report_compiles(startup.compiled_artifacts(), 0.0)["new_kernels"] == 0
