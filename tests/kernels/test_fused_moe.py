"""Fused MoE: the Triton kernel against the torch reference path (compiled on a GPU, else interpreted), the
device-side alignment of (token, expert) pairs, and the autotune store behaviour of its launch parameters."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.cases import run  # noqa: E402
from tests.kernels.interp import assert_case_ok, run_interpreted  # noqa: E402
from tests.kernels.moe_cases import MOE_CASES  # noqa: E402
from tierlm.kernels import fused_moe_tune  # noqa: E402
from tierlm.kernels.fused_moe import PAIRS, MoEConfig, max_padded_rows, moe_align  # noqa: E402

GPU_DTYPES = [torch.bfloat16, torch.float16, torch.float32]


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_interpreted("tests.kernels.moe_cases", list(MOE_CASES))


@pytest.mark.parametrize("name", list(MOE_CASES))
def test_fused_moe_case(name: str, request: pytest.FixtureRequest) -> None:
    assert_case_ok(name, request, lambda: run([name], "cuda", GPU_DTYPES, cases=MOE_CASES))


@pytest.mark.parametrize("tokens,top_k,block_m", [(1, 2, 4), (5, 2, 4), (7, 3, 8), (50, 1, 16)])
def test_align_groups_pairs_by_expert_in_padded_blocks(tokens, top_k, block_m):
    experts = 6
    gen = torch.Generator().manual_seed(tokens)
    ids = torch.stack([torch.randperm(experts, generator=gen)[:top_k] for _ in range(tokens)])
    al = moe_align(ids, experts, block_m)
    pairs, n = al.sorted_pairs.tolist(), tokens * top_k
    total = int(al.total.item())
    assert al.max_rows == len(pairs) == max_padded_rows(n, experts, block_m) >= total
    assert total % block_m == 0 and all(p == n for p in pairs[total:])
    assert sorted(p for p in pairs if p < n) == list(range(n))  # every pair exactly once
    flat = ids.reshape(-1).tolist()
    for b in range(total // block_m):
        block = [p for p in pairs[b * block_m:(b + 1) * block_m] if p < n]
        assert block and all(flat[p] == al.block_expert[b] for p in block)
        assert block == sorted(block)  # stable: a token's rows keep token order within the expert
    for e in range(experts):  # each expert's segment is whole blocks: count rounded up to block_m
        count = flat.count(e)
        assert int((al.block_expert[:total // block_m] == e).sum()) * block_m == -(-count // block_m) * block_m


def test_bucket_of():
    got = [fused_moe_tune.bucket_of(n) for n in (1, 2, 3, 5, 9, 16, 17, 4096, 10000)]
    assert got == [1, 2, 4, 8, 16, 16, 64, 4096, 4096]


def test_pair_launches_are_timed_only_for_a_few_tokens():
    grouped, pairs = fused_moe_tune.CANDIDATES, fused_moe_tune.PAIR_CANDIDATES
    assert pairs and all(c.block_m == PAIRS for c in pairs) and all(c.block_m > PAIRS for c in grouped)
    for bucket in fused_moe_tune.BUCKETS:
        listed = fused_moe_tune.candidates(bucket)
        assert listed[:len(grouped)] == grouped, "grouped launches first: a near-tie goes to them"
        assert listed[len(grouped):] == (pairs if bucket <= fused_moe_tune.PAIRS_UP_TO else ())


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """Tuning on the CPU: a fake device name, a fake benchmark in which the third candidate is fastest, and the
    pool's builds recorded as "built" among the timings."""
    monkeypatch.setenv("TIERLM_CACHE_DIR", str(tmp_path / "root"))
    monkeypatch.delenv("TIERLM_AUTOTUNE_CACHE", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    timed = []

    def fake_bench(fn, copies) -> float:
        assert copies == fused_moe_tune.ROUTINGS
        timed.append(1)
        return 1.0 if timed[-4:] == ["built", 1, 1, 1] else 2.0

    def fake_prebuild(launches, device):
        assert len(launches) in (len(fused_moe_tune.CANDIDATES), len(fused_moe_tune.candidates(1)))
        timed.append("built")
        return 0

    monkeypatch.setattr(fused_moe_tune, "graph_time_us", fake_bench)
    monkeypatch.setattr(fused_moe_tune, "prebuild", fake_prebuild)
    return tmp_path / "root" / "autotune", timed


def tuned():
    return fused_moe_tune.tuned_configs(4, 32, 16, 2, torch.bfloat16, torch.device("cpu"))


def timed_calls() -> int:
    return sum(len(fused_moe_tune.candidates(b)) for b in fused_moe_tune.BUCKETS)


def test_tunes_each_bucket_once_then_reuses(fake_gpu):
    store, timed = fake_gpu
    table = tuned()
    assert set(table) == set(fused_moe_tune.BUCKETS)
    assert all(cfg == fused_moe_tune.CANDIDATES[2] and isinstance(cfg, MoEConfig) for cfg in table.values())
    # per bucket, its candidates built on the pool, then timed
    once = [t for b in fused_moe_tune.BUCKETS for t in ["built"] + [1] * len(fused_moe_tune.candidates(b))]
    assert timed == once
    assert tuned() == table and timed == once
    files = sorted((store / "fused_moe").glob("*.json"))
    assert len(files) == len(fused_moe_tune.BUCKETS)
    factors = [json.loads(f.read_text())["factors"] for f in files]
    assert {f["tokens"] for f in factors} == set(fused_moe_tune.BUCKETS)
    assert all(f["device"] == "Fake GPU" and f["num_experts"] == 4 and f["top_k"] == 2 for f in factors)
    for f in factors:  # a bucket's key lists what it timed
        assert f["candidates"] == [list(dataclasses.astuple(c)) for c in fused_moe_tune.candidates(f["tokens"])]
    assert all(f["tie"] == fused_moe_tune.TIE and f["timed"].startswith("cuda graph") for f in factors), \
        "tunings timed eagerly or picked without the tie rule are not reused"


def test_reuse_off_writes_runs_and_keeps_canonical(fake_gpu, monkeypatch):
    store, timed = fake_gpu
    tuned()
    canonical = {f: f.read_bytes() for f in (store / "fused_moe").glob("*.json")}
    monkeypatch.setenv("TIERLM_AUTOTUNE_CACHE", "0")
    tuned()
    assert timed.count(1) == 2 * timed_calls()  # tuned afresh
    assert {f: f.read_bytes() for f in (store / "fused_moe").glob("*.json")} == canonical
    assert len(list((store / "runs").glob("fused_moe.*.json"))) == len(fused_moe_tune.BUCKETS)



def test_a_near_tie_goes_to_the_candidate_listed_first(monkeypatch):
    """Times 1.005 (first), 2, 1.0 (third), ...: within 1% of the fastest, the first listed wins; at 1.02 the
    third does. Each timed call runs the kernel on one of the routings."""
    monkeypatch.setattr(fused_moe_tune, "prebuild", lambda launches, device: 0)

    def tune(first_us: float) -> MoEConfig:
        times = iter([first_us, 2.0, 1.0] + [3.0] * (len(fused_moe_tune.candidates(3)) - 3))
        monkeypatch.setattr(fused_moe_tune, "graph_time_us", lambda fn, copies: next(times))
        out = fused_moe_tune.tune_fused_moe(4, 32, 16, 2, 3, torch.float32, torch.device("cpu"))
        assert out["timings_us"]["/".join(map(str, dataclasses.astuple(fused_moe_tune.CANDIDATES[2])))] == 1.0
        return MoEConfig(**{f.name: out[f.name] for f in dataclasses.fields(MoEConfig)})

    assert tune(1.005) == fused_moe_tune.CANDIDATES[0]
    assert tune(1.02) == fused_moe_tune.CANDIDATES[2]


def test_the_timed_calls_run_the_kernel_on_each_routing(monkeypatch):
    """Call i of a timed graph runs the candidate's launch on routing i (of `ROUTINGS`, all different) with the
    layer's weights."""
    monkeypatch.setattr(fused_moe_tune, "prebuild", lambda launches, device: 0)
    calls = []

    def fake_moe(x, gate_up, down, weights, ids, cfg):
        calls.append((x, gate_up, down, ids, cfg))
        return x

    def run_each(fn, copies):
        for i in range(copies):
            fn(i)
        return 1.0

    monkeypatch.setattr(fused_moe_tune, "fused_moe", fake_moe)
    monkeypatch.setattr(fused_moe_tune, "graph_time_us", run_each)
    fused_moe_tune.tune_fused_moe(8, 32, 16, 2, 5, torch.float32, torch.device("cpu"))
    n = fused_moe_tune.ROUTINGS
    assert len(calls) == n * len(fused_moe_tune.candidates(5))
    for k, (x, gate_up, down, ids, cfg) in enumerate(calls):
        assert cfg == fused_moe_tune.candidates(5)[k // n]
        assert x is calls[k % n][0] and ids is calls[k % n][3], "call i takes routing i"
        assert gate_up is calls[0][1] and down is calls[0][2] and gate_up.shape == (8, 32, 32)
    assert len({tuple(c[3].flatten().tolist()) for c in calls[:n]}) == n, "the routings differ"


def test_a_result_names_its_launch_as_the_tuner_does():
    every = fused_moe_tune.candidates(1)
    for cfg in every:
        result = {**dataclasses.asdict(cfg), "us": 1.0, "timings_us": {}, "tokens": 1}
        assert fused_moe_tune.config_of(result) == cfg
        assert fused_moe_tune.launch_name(cfg) == "/".join(str(v) for v in dataclasses.astuple(cfg))
    assert len({fused_moe_tune.launch_name(c) for c in every}) == len(every)
