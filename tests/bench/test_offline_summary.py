"""`benchmarks/offline_summary.py`: one line per `bench offline --json` file, ITL where the file has it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import offline_summary  # noqa: E402


def _result(itl: bool, new_kernels: int = 0, names: tuple = ()) -> dict:
    t = {"output_tok_per_s": 1110.4, "ttft_s": {"p50": 0.0025}, "tpot_s": {"p50": 0.000976},
         "new_kernels": new_kernels}
    if names:
        t["new_kernel_names"] = list(names)
    if itl:
        t["itl_s"] = {"p50": 0.000897, "p99": 0.0011, "mean": 0.000976, "max": 0.00739}
    return {"tierlm": t}


def test_summary_lines_with_and_without_itl_and_a_broken_file(tmp_path, capsys):
    (tmp_path / "new.json").write_text(json.dumps(_result(True, new_kernels=3)))
    (tmp_path / "old.json").write_text(json.dumps(_result(False)))
    (tmp_path / "cut.json").write_text('{"tierlm": {"output_tok')
    (tmp_path / "named.json").write_text(json.dumps(_result(True, 2, ("_extend_kernel", "_pick_kernel"))))
    offline_summary.main([str(tmp_path / n) for n in ("new.json", "old.json", "cut.json", "gone.json", "named.json")])
    new, old, cut, gone, named = capsys.readouterr().out.splitlines()
    assert named.endswith("2 kernels compiled in the run: _extend_kernel, _pick_kernel")
    assert new.startswith("new ") and "TPOT p50 0.976 ms" in new and "ITL p50 0.897 / max 7.39 ms" in new
    assert new.endswith("3 kernels compiled in the run") and "compiled" not in old
    assert "TPOT p50 0.976 ms" in old and "ITL" not in old
    assert cut.startswith("cut ") and "no result" in cut
    assert gone.startswith("gone") and "no result" in gone
