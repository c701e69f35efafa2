"""Sharded layers read exactly their slice of the checkpoint: every rank's parameters equal the matching
slice of the unsharded model's (query heads split, KV heads split or replicated, MLP split, vocabulary
split with zero padding, tied embeddings)."""
from __future__ import annotations

import pytest
import torch

from tierlm.models.config import ModelConfig
from tierlm.models.llama import CausalLM
from tierlm.models.loader import load_weights
from tierlm.parallel.group import TPGroup


@pytest.fixture(scope="module")
def odd_vocab(tmp_path_factory):
    """A tiny Llama whose vocabulary does not divide by the ranks (the last rank's rows are padded)."""
    from tierlm.utils.tiny_model import make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("odd") / "llama", arch="llama", vocab_size=510)
    assert ModelConfig.from_dir(path).vocab_size % 4
    return path


def build(model_dir, tp: TPGroup) -> CausalLM:
    cfg = ModelConfig.from_dir(model_dir)
    model = CausalLM(cfg, max_positions=64, tp=tp) if tp.size > 1 else CausalLM(cfg, max_positions=64)
    load_weights(model, model_dir, show_progress=False)
    return model


@pytest.mark.parametrize("arch", ["llama", "qwen2", "odd-vocab llama"])
@pytest.mark.parametrize("size", [2, 4])
def test_every_rank_holds_its_slice(tiny_models, odd_vocab, arch, size):
    model_dir = odd_vocab if arch == "odd-vocab llama" else tiny_models[arch]
    full = build(model_dir, TPGroup())
    cfg = full.config
    hd = cfg.head_dim
    q, kv = cfg.num_heads * hd, cfg.num_kv_heads * hd
    full_attn, full_mlp = full.model.layers[1].self_attn, full.model.layers[1].mlp
    fq, fk, fv = full_attn.qkv_proj.weight.split([q, kv, kv])
    inter = cfg.intermediate_size
    fgate, fup = full_mlp.gate_up_proj.weight.split([inter, inter])
    for rank in range(size):
        tp = TPGroup(size, rank)
        part = build(model_dir, tp)
        attn, mlp = part.model.layers[1].self_attn, part.model.layers[1].mlp
        ql, kvl = attn.q_size, attn.kv_size
        pq, pk, pv = attn.qkv_proj.weight.split([ql, kvl, kvl])
        kv_index = tp.kv_heads(cfg.num_kv_heads)[1]
        assert torch.equal(pq, fq[rank * ql:(rank + 1) * ql])
        assert torch.equal(pk, fk[kv_index * kvl:(kv_index + 1) * kvl])
        assert torch.equal(pv, fv[kv_index * kvl:(kv_index + 1) * kvl])
        if attn.qkv_proj.bias is not None:
            bq, bk, _ = attn.qkv_proj.bias.split([ql, kvl, kvl])
            fbq, fbk, _ = full_attn.qkv_proj.bias.split([q, kv, kv])
            assert torch.equal(bq, fbq[rank * ql:(rank + 1) * ql])
            assert torch.equal(bk, fbk[kv_index * kvl:(kv_index + 1) * kvl])
        assert torch.equal(attn.o_proj.weight, full_attn.o_proj.weight[:, rank * ql:(rank + 1) * ql])
        il = mlp.intermediate
        gate, up = mlp.gate_up_proj.weight.split([il, il])
        assert torch.equal(gate, fgate[rank * il:(rank + 1) * il])
        assert torch.equal(up, fup[rank * il:(rank + 1) * il])
        assert torch.equal(mlp.down_proj.weight, full_mlp.down_proj.weight[:, rank * il:(rank + 1) * il])
        emb = part.model.embed_tokens
        rows = full.model.embed_tokens.weight[emb.start:emb.start + emb.per_rank]
        assert torch.equal(emb.weight[:len(rows)], rows)
        assert not emb.weight[len(rows):].any(), "vocabulary padding must be zero"
        if cfg.tie_word_embeddings:
            assert part.lm_head.weight is emb.weight
        else:
            assert torch.equal(part.lm_head.weight[:len(rows)], full.lm_head.weight[emb.start:emb.start + len(rows)])
        assert torch.equal(part.model.norm.weight, full.model.norm.weight)
