"""The loader routes checkpoint tensors through the model's mapping: fused shards and stacked expert slices."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tierlm.models.config import ModelConfig
from tierlm.models.errors import ModelLoadError
from tierlm.models.loader import load_weights
from tierlm.models.qwen3_moe import CausalLM


def build(model_dir) -> CausalLM:
    model = CausalLM(ModelConfig.from_dir(model_dir), max_positions=64)
    load_weights(model, model_dir, show_progress=False)
    return model


def rewrite(src, dst, edit) -> None:
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})


def test_expert_tensors_fill_their_stacked_slices(tiny_qwen3_moe):
    ckpt = load_file(tiny_qwen3_moe / "model.safetensors")
    moe = build(tiny_qwen3_moe).model.layers[1].mlp
    inter = moe.intermediate
    for e in range(8):
        prefix = f"model.layers.1.mlp.experts.{e}"
        assert torch.equal(moe.experts_gate_up[e, :inter], ckpt[f"{prefix}.gate_proj.weight"])
        assert torch.equal(moe.experts_gate_up[e, inter:], ckpt[f"{prefix}.up_proj.weight"])
        assert torch.equal(moe.experts_down[e], ckpt[f"{prefix}.down_proj.weight"])
    assert torch.equal(moe.gate.weight, ckpt["model.layers.1.mlp.gate.weight"])


def test_dense_layer_of_a_moe_model_keeps_fused_gate_up(tiny_qwen3_moe):
    ckpt = load_file(tiny_qwen3_moe / "model.safetensors")
    mlp = build(tiny_qwen3_moe).model.layers[0].mlp
    gate_up = torch.cat([ckpt["model.layers.0.mlp.gate_proj.weight"], ckpt["model.layers.0.mlp.up_proj.weight"]])
    assert torch.equal(mlp.gate_up_proj.weight, gate_up)


def test_missing_expert_tensor_is_named(tiny_qwen3_moe, tmp_path):
    rewrite(tiny_qwen3_moe, tmp_path / "m",
            lambda t: t.pop("model.layers.1.mlp.experts.5.up_proj.weight"))
    with pytest.raises(ModelLoadError, match=r"lacks tensor\(s\): model.layers.1.mlp.experts.5.up_proj.weight$"):
        build(tmp_path / "m")


def test_more_experts_in_the_checkpoint_than_the_config(tiny_qwen3_moe, tmp_path):
    rewrite(tiny_qwen3_moe, tmp_path / "m", lambda t: None)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["num_local_experts"] = 4
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"'model.layers.1.mlp.experts.4.\w+_proj.weight' in model.safetensors: "
                                             r"index 4 is out of range, the model has 4"):
        build(tmp_path / "m")


def test_wrong_expert_shape_is_named(tiny_qwen3_moe, tmp_path):
    def shrink(t):
        t["model.layers.1.mlp.experts.2.down_proj.weight"] = torch.zeros(64, 16)
    rewrite(tiny_qwen3_moe, tmp_path / "m", shrink)
    with pytest.raises(ModelLoadError, match=r"'model.layers.1.mlp.experts.2.down_proj.weight' in model.safetensors "
                                             r"has shape \(64, 16\), the model expects \(64, 32\)"):
        build(tmp_path / "m")
