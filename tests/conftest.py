"""Shared fixtures: tiny random checkpoints (with a real tokenizer) built once per test session."""
from __future__ import annotations

import pytest

from tierlm.utils.tiny_model import make_tiny_model

# Engine options that every CPU test uses unless it says otherwise.
CPU_OPTS = dict(device="cpu", dtype="float32", kv_cache_gb=0.01, page_size=4)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{arch: model_dir} for llama (sharded, llama3 rope scaling), qwen2 (tied, qkv bias), qwen3 (q/k norm),
    deepseek_v2 and deepseek_v3 (latent attention, MoE)."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: make_tiny_model(root / arch, arch=arch, num_shards=2 if arch == "llama" else 1)
            for arch in ("llama", "qwen2", "qwen3", "deepseek_v2", "deepseek_v3")}


@pytest.fixture(scope="session")
def tiny_qwen3(tiny_models):
    return tiny_models["qwen3"]


@pytest.fixture(scope="session")
def tiny_qwen3_moe(tmp_path_factory):
    """Qwen3-MoE: layer 0 dense (mlp_only_layers), layer 1 eight experts, top-2, renormalized."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen3_moe", arch="qwen3_moe")


@pytest.fixture
def tiny_model_of(request):
    """`arch -> model_dir` over `tiny_models` and `qwen3_moe`, built only when asked for."""
    def get(arch: str):
        if arch == "qwen3_moe":
            return request.getfixturevalue("tiny_qwen3_moe")
        return request.getfixturevalue("tiny_models")[arch]
    return get
