"""`benchmarks/show_tuned.py`: one line per autotune result of a root, the chosen launch without timings."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tierlm.cachedir import AutotuneStore
from tierlm.cachedir.root import resolve_root

ROOT = Path(__file__).resolve().parents[2]


def test_lists_each_result_without_its_timings(tmp_path):
    store = AutotuneStore(resolve_root({"TIERLM_CACHE_DIR": str(tmp_path)}), reuse=True)
    store.save("skinny_gemm", {"n": 4096, "k": 1024, "dtype": "bfloat16"},
               {"plan": {"plain": {"8": None, "64": {"block_n": 64}}}, "timings_us": {"plain/8/torch": 5.1}})
    store.save("triton_decode", {"num_heads": 16, "num_kv_heads": 8, "head_dim": 128},
               {"decode_block_n": 128, "decode_num_warps": 4, "us": 143.1, "timings_us": {"128/4/2": 143.1}})
    (tmp_path / "autotune" / "skinny_gemm" / "broken.json").write_text("{")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "show_tuned.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == f"== {tmp_path}: 3 autotune results"
    lines = "\n".join(out[1:])
    assert 'skinny_gemm n=4096 k=1024 dtype=bfloat16: {"plan": {"plain": {"64": {"block_n": 64}, "8": null}}}' in lines
    assert 'triton_decode num_heads=16 num_kv_heads=8 head_dim=128: {"decode_block_n": 128' in lines
    assert "timings_us" not in lines and "broken.json: unreadable" in lines
