"""`tierlm bench startup` on a tiny model (CPU, eager: the compiling cases are tests/engine/test_compile.py's):
each case starts a fresh process on its own root; JSON and the table; bad flags in one line."""
from __future__ import annotations

import json

from tierlm.cli.main import main

ARGS = ["--load-format", "auto", "--device", "cpu", "--dtype", "float32", "--kv-cache-gb", "0.01", "--page-size",
        "4", "--modes", "eager"]


def test_startup_bench_eager_cases_json_and_table(tiny_qwen3, tmp_path, capsys):
    assert main(["bench", "startup", "--model", str(tiny_qwen3), *ARGS, "--work-dir", str(tmp_path / "w"),
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    cold, warm, imported = r["cases"]
    assert [c["root"] for c in r["cases"]] == ["cold", "warm", "imported"]
    for c in (cold, warm):
        assert c["mode"] == "eager" and c["device"] == "cpu" and c["compilations"] == c["new_kernels"] == 0
        assert c["process_s"] > c["first_token_s"] >= c["construct_s"] > 0 and c["aot_key"] is None
    assert cold["vs_cold"] == 1.0 and warm["vs_cold"] > 0
    assert "no AOT tree" in imported["skipped"]  # eager on the CPU compiles nothing: nothing to export
    assert (tmp_path / "w" / "eager-a").is_dir()  # the roots are kept under --work-dir

    assert main(["bench", "startup", "--model", str(tiny_qwen3), *ARGS, "--work-dir", str(tmp_path / "w")]) == 2
    assert "--work-dir" in capsys.readouterr().err


def test_startup_bench_table(tiny_qwen3, capsys):
    assert main(["bench", "startup", "--model", str(tiny_qwen3), *ARGS]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:4] == ["mode", "root", "construct", "s"]
    assert out[2].startswith("eager    cold") and "skipped" in out[4]


def test_startup_bench_bad_mode(capsys):
    assert main(["bench", "startup", "--modes", "eager,fast"]) == 2
    assert capsys.readouterr().err.strip() == ("tierlm bench: error: --modes: unknown mode fast; choose from "
                                               "eager, compile")
