"""Tiny random checkpoints with a real tokenizer: for tests and for trying TierLM without weights.

`make_tiny_model(dir, arch)` writes a Hugging Face directory (config.json, safetensors, tokenizer files and a
chat template) that both TierLM and `transformers` load, so parity tests compare the two on the same bytes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

ARCHS = ("llama", "qwen2", "qwen3", "qwen3_moe", "deepseek_v2", "deepseek_v3")

# A ChatML-style template (Qwen's convention) so chat endpoints work on tiny models.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    text = (Path(__file__).with_name("tiny_corpus.txt")).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def build_tokenizer(vocab_size: int = 512):
    """Train a byte-level BPE on the built-in corpus and wrap it as a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _deepseek_config(arch: str, common: dict):
    """Multi-head latent attention and MoE: 3 layers (the first dense), 4 routed experts (top-2), 1 shared.
    deepseek_v2: plain q_proj, YaRN rope, softmax greedy routing; deepseek_v3: low-rank q, sigmoid routing in
    2 groups (1 picked) with a score bias, normalized and scaled weights."""
    from transformers import DeepseekV2Config, DeepseekV3Config

    common.update(num_hidden_layers=3, num_key_value_heads=4, moe_intermediate_size=32, kv_lora_rank=32,
                  qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=4, num_experts_per_tok=2,
                  n_shared_experts=1, first_k_dense_replace=1)
    if arch == "deepseek_v2":
        common.update(q_lora_rank=None, topk_method="greedy", routed_scaling_factor=1.0,
                      rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128,
                                    "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.8})
        return DeepseekV2Config, common
    common.update(q_lora_rank=48, n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
                  num_nextn_predict_layers=0)
    return DeepseekV3Config, common


def tiny_config(arch: str, vocab_size: int, **overrides):
    """A small `transformers` config of the given architecture (GQA 4 query heads : 2 KV heads; DeepSeek:
    multi-head latent attention with MoE layers)."""
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config, Qwen3MoeConfig

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
                  eos_token_id=0, bos_token_id=None, pad_token_id=0)
    if arch == "llama":
        common.update(head_dim=16, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 128})
        cls = LlamaConfig
    elif arch == "qwen2":
        common.update(tie_word_embeddings=True)
        cls = Qwen2Config
    elif arch == "qwen3":
        common.update(head_dim=32)
        cls = Qwen3Config
    elif arch == "qwen3_moe":  # layer 0 dense, layer 1 8 experts top-2
        common.update(head_dim=32, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                      norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[0])
        cls = Qwen3MoeConfig
    elif arch in ("deepseek_v2", "deepseek_v3"):
        cls, common = _deepseek_config(arch, common)
    else:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    common.update(overrides)
    return cls(**common)


class DirectoryNotEmptyError(FileExistsError):
    """The output directory already holds files and overwriting was not asked for."""


def _prepare_dir(path: Path, overwrite: bool) -> None:
    """Create `path`; a non-empty one is refused unless `overwrite`, which first drops old weight files (a
    stale shard or index would otherwise be loaded alongside the new weights)."""
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise DirectoryNotEmptyError(f"{path} is not empty")
        for old in [*path.glob("*.safetensors"), path / "model.safetensors.index.json"]:
            old.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)


def make_tiny_model(path: str | Path, arch: str = "qwen3", seed: int = 0, vocab_size: int = 512,
                    num_shards: int = 1, overwrite: bool = False, **config_overrides) -> Path:
    """Write a random `arch` checkpoint and a trained tokenizer to `path`; returns the path.

    `num_shards > 1` writes sharded safetensors with an index, like large hub checkpoints. A non-empty `path`
    raises DirectoryNotEmptyError unless `overwrite`.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    _prepare_dir(path, overwrite)
    tokenizer = build_tokenizer(vocab_size)
    config = tiny_config(arch, vocab_size=len(tokenizer), **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # random init is too small to give varied text; widen it a little
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.15)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # DeepSeek-V3 routing bias: zero at init
                b.normal_(0.0, 0.05)
    max_shard: Optional[str] = None
    if num_shards > 1:
        total = sum(p.numel() * p.element_size() for p in model.parameters())
        max_shard = f"{max(1, total // num_shards // 1000)}KB"
    kwargs = {"max_shard_size": max_shard} if max_shard else {}
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    tokenizer.save_pretrained(path)
    gen = {"eos_token_id": 0, "pad_token_id": 0, "do_sample": False}
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return path
