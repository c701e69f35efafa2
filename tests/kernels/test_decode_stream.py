"""The batch-1 decode step as one persistent launch (`tierlm.kernels.decode_stream`).

On CPU: its tiling rule, its argument checks, and that the CUDA source compiles for sm_90 (where nvcc and
tvm-ffi are installed). On a Hopper GPU: the step against the torch reference (`benchmarks/decode_stream_reference.py`),
repeats bit for bit, the new K/V stored and nothing else in the cache touched.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from benchmarks.decode_stream_reference import SHAPES, random_model, reference_step
from tierlm.kernels import decode_stream as ds
from tierlm.kernels.decode_stream import DecodeStream, StreamInputs, StreamLayer, jit_args, tile_rows

CSRC = Path(ds.__file__).resolve().parent.parent / "jit" / "csrc"


def _kernel_constants() -> dict[str, int]:
    """The headers' top-level `constexpr int` values, evaluated in order."""
    values: dict[str, int] = {}
    for name in ("decode_stream_sync.cuh", "decode_stream_attention.cuh"):
        for line in (CSRC / name).read_text().splitlines():
            if line.startswith("constexpr int "):
                for decl in line[len("constexpr int "):].split("//")[0].rstrip(" ;").split(","):
                    key, expr = (part.strip() for part in decl.split("="))
                    values[key] = eval(expr, {"__builtins__": {}}, dict(values))  # arithmetic on earlier constants
    return values


def test_python_mirrors_the_kernel_constants():
    # the builder sizes shared memory and the op table with these; a mismatch overruns shared memory or shifts fields
    k = _kernel_constants()
    assert ds.HEADER_BYTES == k["kHeaderBytes"]
    assert len(ds.OP_FIELDS) == k["kOpFields"]
    assert (ds.STAGE_BYTES, ds.CONSUMER_WARPS, ds.HEAD_DIM, ds.MAX_SPLITS) == (
        k["kStageBytes"], k["kConsumerWarps"], k["kHeadDim"], k["kMaxSplits"])


def test_tile_rows_fill_a_stage_with_whole_rows():
    assert tile_rows(6144, 4096) == 4  # Llama-3.1-8B QKV: 4 rows of 8 KB
    assert tile_rows(14336, 4096, segs=2) == 2  # gate and up rows side by side
    assert tile_rows(4096, 14336) == 1  # a down row is 28 KB
    assert tile_rows(1000, 512) == 8
    assert tile_rows(1002, 512) == 2  # rows must divide n
    with pytest.raises(ValueError, match="multiple of 64"):
        tile_rows(4096, 4100)
    with pytest.raises(ValueError, match="at most 16384"):
        tile_rows(4096, 16448)


def _layer(h: int, inter: int, q: int, kv: int, slots: int = 16, **bad) -> StreamLayer:
    bf = torch.bfloat16
    parts = dict(input_norm=torch.ones(h, dtype=bf), qkv=torch.zeros((q + 2 * kv) * 128, h, dtype=bf),
                 o=torch.zeros(h, q * 128, dtype=bf), post_norm=torch.ones(h, dtype=bf),
                 gate_up=torch.zeros(2 * inter, h, dtype=bf), down=torch.zeros(h, inter, dtype=bf),
                 k_cache=torch.zeros(slots, kv, 128, dtype=bf), v_cache=torch.zeros(slots, kv, 128, dtype=bf))
    parts.update(bad)
    return StreamLayer(**parts)


def _stream(layer: StreamLayer, **kw) -> DecodeStream:
    h, vocab = 256, 64
    inputs = StreamInputs(torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int32),
                          torch.ones(1, dtype=torch.int32), torch.zeros(1, dtype=torch.int64),
                          torch.zeros(2, 8, dtype=torch.int32))
    table = torch.zeros(8, 128)
    args = dict(q_heads=2, kv_heads=1, eps=1e-5, scale=0.088)
    args.update(kw)
    return DecodeStream(torch.zeros(vocab, h, dtype=torch.bfloat16), [layer], torch.ones(h, dtype=torch.bfloat16),
                        torch.zeros(vocab, h, dtype=torch.bfloat16), table, table, inputs, **args)


def test_arguments_are_checked_by_name():
    with pytest.raises(ValueError, match=r"layers\[0\]\.qkv: expected .*\(512, 256\)"):
        _stream(_layer(256, 512, 2, 1, qkv=torch.zeros(100, 256, dtype=torch.bfloat16)))
    with pytest.raises(ValueError, match=r"layers\[0\]\.down: expected a contiguous torch.bfloat16"):
        _stream(_layer(256, 512, 2, 1, down=torch.zeros(256, 512)))
    with pytest.raises(ValueError, match="whole group"):
        _stream(_layer(256, 512, 2, 1), q_heads=3, kv_heads=2)
    with pytest.raises(ValueError, match="CUDA only"):
        _stream(_layer(256, 512, 2, 1))


def _can_build_sm90() -> bool:
    try:
        import tvm_ffi  # noqa: F401
        from tierlm.jit.toolchain import find_nvcc
        return find_nvcc() is not None
    except ImportError:
        return False


@pytest.mark.skipif(not _can_build_sm90(), reason="needs nvcc and apache-tvm-ffi")
def test_the_kernel_compiles_for_sm90(tmp_path, monkeypatch):
    from tierlm.jit.loader import build_jit

    monkeypatch.setenv("TIERLM_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TIERLM_CACHE_REQUIRE_HIT", raising=False)
    args, kwargs = jit_args(4)
    entry = build_jit(*args, **kwargs, cuda_arch="9.0")
    assert (entry.path / "decode_stream.so").is_file()


def _hopper() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)


@pytest.mark.skipif(not _hopper(), reason="needs a Hopper GPU (bulk copies, 227 KB of shared memory per block)")
@pytest.mark.parametrize("context", [0, 7, 300, 2000])  # 2000: a warp takes its tokens in two rounds
def test_matches_the_reference_and_repeats_bit_for_bit(context):
    dev = torch.device("cuda")
    m = random_model(dataclasses.replace(SHAPES["small"], layers=3), context, dev, seed=context)
    ref_layers = [dataclasses.replace(ly, k_cache=ly.k_cache.clone(), v_cache=ly.v_cache.clone()) for ly in m.layers]
    ref = reference_step(m, ref_layers)
    s = m.shape
    stream = DecodeStream(m.embed, m.layers, m.final_norm, m.lm_head, m.cos, m.sin, m.inputs, q_heads=s.q_heads,
                          kv_heads=s.kv_heads, eps=1e-5, scale=128 ** -0.5, stages=4)
    got = stream.run().clone()
    assert float((got - ref).abs().max() / ref.abs().max()) < 2e-3
    assert int(got.argmax()) == int(ref.argmax())
    for _ in range(2):  # the caches hold the new token already: the same step, bit for bit
        assert torch.equal(stream.run(), got)
    loc = int(m.inputs.out_loc[0])
    for a, b in zip(m.layers, ref_layers):
        assert (a.k_cache[loc].float() - b.k_cache[loc].float()).abs().max() <= 0.0625
        assert (a.v_cache[loc].float() - b.v_cache[loc].float()).abs().max() <= 0.0625
        keep = torch.ones(a.k_cache.shape[0], dtype=torch.bool, device=dev)
        keep[loc] = False
        assert torch.equal(a.k_cache[keep], b.k_cache[keep]) and torch.equal(a.v_cache[keep], b.v_cache[keep])
