"""`benchmarks/run_compiles.py`: the variants Triton's JIT cache hook reports, and how a run's variant differs
from the start-up's closest one (the hook's call shaped as Triton 3.6's `JITFunction._call_hook` makes it)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from benchmarks.run_compiles import Recorder, closest, print_diff, startup_diff


def _call(rec: Recorder, name: str, order: int, n_attrs: list) -> None:
    tl = pytest.importorskip("triton.language")
    signature = {"q_ptr": "*bf16", "n": "i32", "ORDER": "constexpr"}
    info = {"key": "unused", "signature": signature, "constants": {(2,): tl.constexpr(order)},
            "configs": [{(0,): [["tt.divisibility", 16]], **({(1,): n_attrs} if n_attrs else {})}],
            "num_warps": 4, "num_stages": 3}
    rec.hook(key="unused", repr="unused", fn=SimpleNamespace(name=name), compile=info, is_manual_warmup=False,
             already_compiled=False)


def test_a_run_variant_is_told_apart_from_the_start_ups_by_its_differing_parameters():
    rec = Recorder()
    _call(rec, "_extend_kernel", 3, [])
    _call(rec, "_extend_kernel", 3, [["tt.divisibility", 16]])
    rec.phase = "256:64:16"
    _call(rec, "_extend_kernel", 1, [])
    _call(rec, "_other_kernel", 1, [])
    started = [spec for _, spec in rec.met_in("start-up")]
    (name, spec), (other, _) = rec.met_in("256:64:16")
    assert name == "_extend_kernel" and other == "_other_kernel" and len(started) == 2
    assert spec[2] == "ORDER=1" and spec[0] == "q_ptr=*bf16[['tt.divisibility', 16]]"
    count, diff = closest(spec, started)
    assert count == 1 and diff == ["ORDER=1  (start-up: 3)"]
    assert closest(spec, []) == (len(spec) + 1, [])  # a kernel the start-up never launched


def test_a_hook_call_it_cannot_read_is_recorded_not_raised():
    rec = Recorder()
    assert rec.hook(fn=SimpleNamespace(name="_k"), compile={}) is None
    (phase, name, spec), = rec.seen
    assert phase == "start-up" and name.startswith("? (KeyError") and spec == ()


def test_two_dumps_start_ups_are_compared_variant_by_variant(tmp_path, capsys):
    a = [["start-up", "k", ["x=1"]], ["start-up", "k", ["x=2"]], ["256:64:16", "k", ["x=3"]]]
    b = [["start-up", "k", ["x=1"]], ["start-up", "j", ["y=*i32"]], ["256:64:16", "k", ["x=2"]]]
    assert startup_diff(a, b) == ([("k", ("x=2",))], [("j", ("y=*i32",))])
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    print_diff(str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    out = capsys.readouterr().out
    assert f"only in {tmp_path / 'a.json'}: 1\n  k: x=2\n" in out
    assert f"only in {tmp_path / 'b.json'}: 1\n  j: y=*i32" in out
