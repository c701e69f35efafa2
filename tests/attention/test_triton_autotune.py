"""Decode autotuning goes through the cache root's autotune store and honours its reuse switch."""
from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

pytest.importorskip("triton")

from tierlm.attention import triton_autotune  # noqa: E402
from tierlm.attention.triton_backend import TritonAttentionConfig  # noqa: E402


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("TIERLM_CACHE_DIR", str(tmp_path / "root"))
    monkeypatch.delenv("TIERLM_AUTOTUNE_CACHE", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    tunings = []

    def fake_tune(base, num_heads, num_kv_heads, head_dim, dtype, device, kv_dtype=None, page_size=16):
        tunings.append(kv_dtype)
        stages = 2 if kv_dtype == torch.float8_e4m3fn else 3
        return {"launches": [[1, 64, 8, stages], [16, 128, 4, 3]], "timings_us": {}}

    monkeypatch.setattr(triton_autotune, "tune_decode", fake_tune)
    return tmp_path / "root", tunings


def tuned():
    return triton_autotune.tuned_config(TritonAttentionConfig(), 16, 8, 128, torch.bfloat16, torch.device("cpu"))


def test_tunes_once_then_reuses(fake_gpu):
    root, tunings = fake_gpu
    cfg = tuned()
    assert (cfg.decode_block_n, cfg.decode_num_warps, cfg.decode_num_stages) == (64, 8, 3)
    assert cfg.decode_launches == ((1, 64, 8, 3), (16, 128, 4, 3))
    assert cfg.decode_launch(15) == (64, 8, 3) and cfg.decode_launch(16) == (128, 4, 3)
    assert tuned() == cfg and len(tunings) == 1
    files = list((root / "autotune" / "triton_decode").glob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["factors"]["device"] == "Fake GPU"


def test_reuse_off_writes_a_run_and_keeps_canonical(fake_gpu, monkeypatch):
    root, tunings = fake_gpu
    tuned()
    canonical = next((root / "autotune" / "triton_decode").glob("*.json"))
    before = canonical.read_bytes()
    monkeypatch.setenv("TIERLM_AUTOTUNE_CACHE", "0")
    tuned()
    assert len(tunings) == 2 and canonical.read_bytes() == before
    assert list((root / "autotune" / "runs").glob("triton_decode.*.json"))


def test_fp8_pool_tuned_on_its_own(fake_gpu):
    """An fp8 KV cache gets its own tuning (its own factors and result); the model-dtype tuning keeps its key
    (the same file as without the argument)."""
    root, tunings = fake_gpu
    tuned()
    same = triton_autotune.tuned_config(TritonAttentionConfig(), 16, 8, 128, torch.bfloat16, torch.device("cpu"),
                                        torch.bfloat16)
    assert same == tuned() and tunings == [None]
    fp8_cfg = triton_autotune.tuned_config(TritonAttentionConfig(), 16, 8, 128, torch.bfloat16,
                                           torch.device("cpu"), torch.float8_e4m3fn)
    assert tunings == [None, torch.float8_e4m3fn] and fp8_cfg.decode_num_stages == 2
    factors = [json.loads(f.read_text())["factors"] for f in (root / "autotune" / "triton_decode").glob("*.json")]
    fp8 = next(f for f in factors if f.get("kv_dtype") == "float8_e4m3fn")
    assert len(factors) == 2 and fp8["dtype"] == "bfloat16" and fp8["widen"] == "fp16"


def test_page_size_and_shapes_key_the_tuning(fake_gpu):
    """Another page size is another tuning; the shapes timed are in the key, so a changed set re-tunes."""
    root, tunings = fake_gpu
    tuned()
    triton_autotune.tuned_config(TritonAttentionConfig(), 16, 8, 128, torch.bfloat16, torch.device("cpu"),
                                 page_size=32)
    factors = [json.loads(f.read_text())["factors"] for f in (root / "autotune" / "triton_decode").glob("*.json")]
    assert len(tunings) == 2 and sorted(f["page_size"] for f in factors) == [16, 32]
    assert factors[0]["buckets"] == [[b, [list(dataclasses.astuple(s)) for s in shapes]]
                                     for b, shapes in triton_autotune.BUCKETS]


def test_shape_lengths_spread_evenly():
    assert triton_autotune.TuneShape(4, 128, 2048).lengths() == [128, 768, 1408, 2048]
    assert triton_autotune.TuneShape(1, 640, 640).lengths() == [640]
    assert triton_autotune.TuneShape(3, 5, 5).lengths() == [5, 5, 5]


def test_pick_sums_relative_times():
    # a is best at the first shape, b at the second; b's loss at the first is smaller than a's at the second
    timings = {"64/4/2": [1.0, 2.0], "128/4/2": [1.1, 1.5], "128/8/3": [0.9, 3.0]}
    assert triton_autotune.pick(timings, 0.0) == "128/4/2"


def test_pick_breaks_a_near_tie_by_stages_then_tile():
    """Within the tolerance more stages win, then the smaller KV tile; outside it the faster launch does."""
    timings = {"128/4/2": [100.0, 200.0], "64/4/2": [100.2, 200.2], "64/4/3": [100.5, 200.5],
               "128/8/3": [100.6, 200.6], "64/8/3": [120.0, 230.0]}
    assert triton_autotune.pick(timings, 0.01) == "64/4/3"
    assert triton_autotune.pick(timings, 0.001) == "128/4/2"
    assert triton_autotune.pick({"128/4/2": [1.0], "64/4/3": [1.02]}, 0.01) == "128/4/2"


def test_decode_inputs_lay_out_shuffled_pages():
    """Each request's slots run in pages of `page_size` consecutive slots; no slot belongs to two requests, and
    there are no more slots than the lengths need."""
    q, k, v, table, rows, lens = triton_autotune.decode_inputs(4, 2, 8, torch.float32, torch.device("cpu"),
                                                               [5, 40, 17], page_size=16)
    assert table.shape == (3, 48) and lens.tolist() == [5, 40, 17] and rows.tolist() == [0, 1, 2]
    assert q.shape == (3, 4, 8) and k.shape == v.shape == ((1 + 3 + 2) * 16, 2, 8)
    used = torch.cat([table[i, :-(-n // 16) * 16] for i, n in enumerate([5, 40, 17])])
    pages = used.view(-1, 16)
    assert torch.equal(pages - pages[:, :1], torch.arange(16, dtype=torch.int32).expand_as(pages))
    assert bool((pages[:, 0] % 16 == 0).all()) and sorted(used.tolist()) == list(range(k.shape[0]))


def test_decode_launch_by_batch_size():
    """The launch rows apply from their smallest batch on; below the first, the single launch fields do."""
    cfg = TritonAttentionConfig(decode_block_n=32, decode_num_warps=2, decode_num_stages=1,
                                decode_launches=((4, 64, 4, 2), (16, 128, 8, 3)))
    assert [cfg.decode_launch(b) for b in (1, 3, 4, 15, 16, 512)] == [
        (32, 2, 1), (32, 2, 1), (64, 4, 2), (64, 4, 2), (128, 8, 3), (128, 8, 3)]
    assert TritonAttentionConfig().decode_launch(256) == (128, 4, 2)


@pytest.mark.parametrize("stored", [{"us": 1.0}, {"launches": "64/4/3"}, {"launches": [[1, 96, 4, 2]]},
                                    {"launches": [[2, 64, 4, 2]]}, {"launches": [[1, 64, 4]]},
                                    {"launches": [[1, 64, 4, 2], [1, 128, 4, 2]]}])
def test_a_stored_result_that_is_not_a_launch_table_is_tuned_again(fake_gpu, stored):
    """JSON of the right kernel and key whose results are not a launch table (hand-edited, another writer): the
    engine tunes again and overwrites it instead of failing to start."""
    root, tunings = fake_gpu
    tuned()
    path = next((root / "autotune" / "triton_decode").glob("*.json"))
    body = json.loads(path.read_text())
    body["results"] = stored
    path.write_text(json.dumps(body))
    assert tuned().decode_launches == ((1, 64, 8, 3), (16, 128, 4, 3)) and len(tunings) == 2
    assert json.loads(path.read_text())["results"]["launches"] == [[1, 64, 8, 3], [16, 128, 4, 3]]


def test_every_candidate_is_built_on_the_pool_before_any_is_timed(monkeypatch):
    """`time_candidates` hands the pool one call per candidate launch, then times each call it built."""
    events = []
    monkeypatch.setattr(triton_autotune, "decode_call", lambda cfg, *inputs: (
        lambda: events.append(("run", cfg.decode_block_n, cfg.decode_num_warps, cfg.decode_num_stages))))
    monkeypatch.setattr(triton_autotune, "prebuild", lambda calls, device: events.append(("built", len(calls))))
    monkeypatch.setattr(triton_autotune, "_median_ms", lambda run: run() or 1.0)
    q = torch.zeros(2, 4, 8)
    out = triton_autotune.time_candidates(TritonAttentionConfig(), (q,) + (None,) * 5, 132)
    names = ["/".join(map(str, v)) for v in itertools.product(*triton_autotune.CANDIDATES.values())]
    assert events[0] == ("built", len(names)) == ("built", 8)
    assert sorted(out) == sorted(names) and len(events) == 1 + len(names)
    assert sorted("/".join(map(str, e[1:])) for e in events[1:]) == sorted(names)


def _fake_timing(monkeypatch, failing):
    """Candidates time as 1 ms, but KV tile 64 faster at the second shape; `failing(name, shape)` raises
    (as a launch whose shared memory the GPU lacks does: float32 at KV tile 128 and 3 stages)."""
    shapes = iter(range(1000))
    monkeypatch.setattr(triton_autotune, "decode_inputs", lambda *a, **kw: (torch.zeros(2, 4, 8), next(shapes)))
    monkeypatch.setattr(triton_autotune, "prebuild", lambda calls, device: 0)

    def call(cfg, q, shape, sms):
        name = f"{cfg.decode_block_n}/{cfg.decode_num_warps}/{cfg.decode_num_stages}"
        return lambda: (name, shape)
    monkeypatch.setattr(triton_autotune, "decode_call", call)

    def median(run):
        name, shape = run()
        if failing(name, shape):
            raise RuntimeError("out of resource: shared memory, Required: 278528, Hardware limit: 232448")
        return 0.5 if name.startswith("64/") and shape == 1 else 1.0
    monkeypatch.setattr(triton_autotune, "_median_ms", median)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: type("P", (), {"multi_processor_count": 132}))


def test_a_launch_the_device_cannot_build_is_left_out_of_the_tuning(monkeypatch, caplog):
    _fake_timing(monkeypatch, lambda name, shape: name.startswith("64/") and name.endswith("/3") and shape == 1)
    shapes = (triton_autotune.TuneShape(4, 8, 8), triton_autotune.TuneShape(4, 8, 16))
    with caplog.at_level("WARNING", logger=triton_autotune.__name__):
        out = triton_autotune.tune_decode(TritonAttentionConfig(), 16, 8, 128, torch.float32, torch.device("cpu"),
                                          buckets=((1, shapes),))
    # the 3-stage KV-64 launches failed at one shape: out; the fastest left is KV 64 at 2 stages
    assert out["launches"] == [[1, 64, 4, 2]]
    assert not any(name.startswith("64/") and name.endswith("/3") for name in out["timings_us"]["1"])
    assert "not timed" in caplog.text and "278528" in caplog.text
    # one line for the bucket, naming every launch left out
    left_out = ["/".join(map(str, v)) for v in itertools.product(*triton_autotune.CANDIDATES.values())
                if v[0] == 64 and v[2] == 3]
    assert left_out
    assert caplog.text.count("not timed") == 1 and all(n in caplog.text for n in left_out)


def test_no_candidate_left_keeps_the_default_launch(monkeypatch, caplog):
    _fake_timing(monkeypatch, lambda name, shape: True)
    with caplog.at_level("WARNING", logger=triton_autotune.__name__):
        out = triton_autotune.tune_decode(TritonAttentionConfig(decode_block_n=64, decode_num_stages=3), 16, 8, 128,
                                          torch.float32, torch.device("cpu"),
                                          buckets=((1, (triton_autotune.TuneShape(4, 8, 8),)),))
    assert out["launches"] == [[1, 64, 4, 3]] and "no candidate ran" in caplog.text
