"""`tierlm bench offline` end to end on a tiny model (CPU), with the transformers comparison."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tierlm.cli.bench import offline
from tierlm.cli.main import main


def test_offline_bench_json_and_hf_ratio(tiny_qwen3, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    (tmp_path / "HASH0").mkdir()
    (tmp_path / "HASH0" / "_built_before.cubin").write_bytes(b"x")
    runs, real_run = [], offline.run_engine

    def compiling_run(*args, **kwargs):  # the timed run (the second) "compiles" two kernels into the cache
        runs.append(1)
        if len(runs) == 2:
            for name in ("_met_in_run", "_also_in_run"):
                (tmp_path / f"HASH{name}").mkdir()
                (tmp_path / f"HASH{name}" / f"{name}.cubin").write_bytes(b"x")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(offline, "run_engine", compiling_run)
    rc = main(["bench", "offline", "--model", str(tiny_qwen3), "--load-format", "auto", "--device", "cpu",
               "--dtype", "float32", "--kv-cache-gb", "0.01", "--page-size", "4", "--num-requests", "6",
               "--input-len", "5", "12", "--output-len", "3", "8", "--compare", "hf", "--hf-batch-size", "4",
               "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    t = r["tierlm"]
    assert t["output_tokens"] == r["hf"]["output_tokens"] > 0
    assert t["output_tok_per_s"] > 0 and r["speedup_vs_hf"] == pytest.approx(
        t["output_tok_per_s"] / r["hf"]["output_tok_per_s"])
    assert t["ttft_s"]["p50"] <= t["ttft_s"]["p99"] and t["tpot_s"]["p50"] > 0
    itl = t["itl_s"]
    assert 0 < itl["p50"] <= itl["p99"] <= itl["max"]
    assert t["tpot_s"]["p99"] <= itl["max"] * (1 + 1e-9)  # a request's TPOT is the mean of its own gaps
    assert r["startup"]["first_token_s"] >= r["startup"]["construct_s"] > 0
    assert t["new_kernels"] == 2 and t["new_kernel_names"] == ["_also_in_run", "_met_in_run"]


def test_offline_bench_bad_ranges(capsys):
    assert main(["bench", "offline", "--input-len", "10", "5"]) == 2
    assert "--input-len" in capsys.readouterr().err


class _ScriptedEngine:
    """Returns, step by step, outputs for the listed requests; the clock advances to the step's time."""

    def __init__(self, steps: list[tuple[float, list[str]]], clock: list[float]) -> None:
        self.steps, self.clock, self.added = list(steps), clock, []

    def add_request(self, rid, ids, params) -> None:
        self.added.append(rid)

    def has_unfinished(self) -> bool:
        return bool(self.steps)

    def step(self):
        at, rids = self.steps.pop(0)
        self.clock[0] = at
        return [SimpleNamespace(request_id=r, new_token_ids=[7], error=None) for r in rids]


def test_offline_itl_sees_a_stall_that_tpot_averages_in(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(offline.time, "perf_counter", lambda: clock[0])
    # request 0: tokens at 1, 2, 3, 4 and (after a stall) 14; request 1: tokens at 1 and 3
    engine = _ScriptedEngine([(1, ["0", "1"]), (2, ["0"]), (3, ["0", "1"]), (4, ["0"]), (14, ["0"])], clock)
    r = offline.run_engine(engine, offline.Workload([[1], [2]], [5, 2]), 0.0, False)
    assert engine.added == ["0", "1"] and r["output_tokens"] == 7
    assert (r["tpot_s"]["p50"], r["tpot_s"]["max"]) == pytest.approx((2.0, 13 / 4))  # the stall is in the mean
    # the gaps: 1, 1, 1, 10 and 2 -> median 1 (the steady step), max 10 (the stall)
    assert r["itl_s"] == pytest.approx({"p50": 1.0, "p99": 10.0, "mean": 3.0, "max": 10.0})
    assert r["ttft_s"]["p50"] == pytest.approx(1.0)


def test_offline_percentiles_of_nothing_are_nan():
    assert all(v != v for v in offline.percentiles([]).values())


def test_offline_table_names_kernels_compiled_in_the_run():
    pct = {"p50": 0.001, "p99": 0.002, "mean": 0.001, "max": 0.003}
    t = {"output_tok_per_s": 10.0, "output_tokens": 20, "elapsed_s": 2.0, "ttft_s": pct, "tpot_s": pct,
         "itl_s": pct}
    r = {"model": "m", "device": "cpu", "dtype": "float32", "startup": {"construct_s": 1.0, "first_token_s": 1.1},
         "engine_info": {}, "tierlm": t}
    assert "compiled during the run" not in offline.format_table(r)
    t["new_kernels"], t["new_kernel_names"] = 2, ["_extend_kernel", "_pick_kernel"]
    assert "2 kernel(s) compiled during the run" in offline.format_table(r)
    assert "(_extend_kernel, _pick_kernel)" in offline.format_table(r)


def test_offline_long_prompts_replace_the_first_requests_only():
    base = offline.Workload.make(6, (5, 12), (3, 8), 500, 0)
    work = base.with_long(2, 40, 8, 500, 0)
    assert [len(p) for p in work.prompts[:2]] == [40, 40] and work.output_lens[:2] == [8, 8]
    assert work.prompts[2:] == base.prompts[2:] and work.output_lens[2:] == base.output_lens[2:]
    assert work.prompts[0] != work.prompts[1] and all(0 <= t < 500 for t in work.prompts[0])
    assert len(base.with_long(9, 3, 8, 500, 0).prompts) == 6  # no more long ones than requests


def test_offline_bench_with_a_long_prompt(tiny_qwen3, capsys):
    rc = main(["bench", "offline", "--model", str(tiny_qwen3), "--load-format", "auto", "--device", "cpu",
               "--dtype", "float32", "--kv-cache-gb", "0.01", "--page-size", "4", "--num-requests", "4",
               "--input-len", "5", "12", "--output-len", "3", "6", "--long-prompts", "1", "120", "--json"])
    assert rc == 0
    t = json.loads(capsys.readouterr().out)["tierlm"]
    vocab = json.loads((tiny_qwen3 / "config.json").read_text())["vocab_size"]
    assert t["output_tokens"] == 6 + sum(offline.Workload.make(4, (5, 12), (3, 6), vocab, 0).output_lens[1:])


def test_offline_bench_bad_long_prompts(capsys):
    assert main(["bench", "offline", "--long-prompts", "1", "0"]) == 2
    assert "--long-prompts" in capsys.readouterr().err


def test_offline_bench_workload_past_the_models_context(tiny_qwen3, capsys):
    """A workload whose longest request needs more positions than the model has is refused before the engine
    starts, naming the flags that make it; the model's own context is the default limit's bound (2048 > 512)."""
    args = ["bench", "offline", "--model", str(tiny_qwen3), "--device", "cpu", "--num-requests", "1"]
    assert main([*args, "--input-len", "400", "400", "--output-len", "113", "113"]) == 2
    err = capsys.readouterr().err
    assert "longest request (513 tokens of --input-len or --long-prompts and --output-len)" in err, err
    assert "Traceback" not in err
    assert main([*args, "--input-len", "4", "4", "--output-len", "2", "2", "--max-model-len", "600"]) == 2
    assert "--max-model-len 600 is longer" in capsys.readouterr().err
    assert main([*args, "--input-len", "4", "4", "--output-len", "2", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engine_info"]["max_model_len"] == 512



def test_offline_bench_repetition_penalty(tiny_qwen3, capsys, monkeypatch):
    """Every timed request carries --repetition-penalty (the bench's warm-up's none); a bad value is refused by
    name. The engine's own start-up requests are not counted."""
    from tierlm.engine.engine import Engine

    seen, real_add = [], Engine.add_request

    def add(self, rid, ids, params, cache=True):
        if cache:  # (the start-up's requests are kept out of the caches)
            seen.append(params.repetition_penalty)
        return real_add(self, rid, ids, params, cache=cache)

    monkeypatch.setattr(Engine, "add_request", add)
    rc = main(["bench", "offline", "--model", str(tiny_qwen3), "--load-format", "auto", "--device", "cpu",
               "--dtype", "float32", "--kv-cache-gb", "0.01", "--page-size", "4", "--num-requests", "3",
               "--input-len", "5", "12", "--output-len", "3", "6", "--repetition-penalty", "1.2", "--json"])
    assert rc == 0 and seen == [1.0, 1.2, 1.2, 1.2]
    assert json.loads(capsys.readouterr().out)["tierlm"]["output_tokens"] > 0
    assert main(["bench", "offline", "--repetition-penalty", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--repetition-penalty: repetition_penalty must be in (0, 100]" in err and "Traceback" not in err
