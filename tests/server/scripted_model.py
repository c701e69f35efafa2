"""A tiny Qwen3 checkpoint whose greedy answers are fixed scripts, for tests that need a model to write a given
text (a function call) through the real engine and server.

Each script is a list of pieces, each piece added to the tokenizer as one (non-special) token. The weights make
every layer's contribution zero (`o_proj` and `down_proj` are zero), so a position's last hidden state is its
token's embedding; embeddings are one-hot on their own dimension and `lm_head` maps the generation prompt's last
token to every script's first piece (a tie: a request picks its script with `logit_bias`), each piece to the next,
and a script's last piece to end of sequence.
"""
from __future__ import annotations

from pathlib import Path

from tierlm.utils.tiny_model import build_tokenizer, tiny_config

# ChatML with function calling as Qwen2.5 and Qwen3 write it: the tools in the system turn, earlier calls as
# <tool_call> blocks (arguments as an object), tool results as <tool_response> in a user turn
TOOLS_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n"
    "{% endif %}# Tools\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n{% endif %}"
    "{%- for message in messages %}{% if message.role == 'system' %}"
    "{% elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response>"
    "<|im_end|>\n{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}"
    "{% for call in message.tool_calls or [] %}<tool_call>\n{\"name\": \"{{ call.function.name }}\", "
    "\"arguments\": {{ call.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SCALE = 10.0


def make_scripted_model(path: Path, scripts: list[list[str]]) -> list[int]:
    """Write the checkpoint to `path`; returns each script's first token id (the `logit_bias` key choosing it).
    Pieces must be distinct across scripts (a token has one successor)."""
    import torch
    from transformers import AutoModelForCausalLM

    pieces = [p for script in scripts for p in script]
    assert len(set(pieces)) == len(pieces), "a piece appears twice"
    tokenizer = build_tokenizer()
    tokenizer.add_tokens(pieces)
    tokenizer.chat_template = TOOLS_TEMPLATE
    start = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    start_id = start[-1] if isinstance(start, list) else start["input_ids"][-1]
    config = tiny_config("qwen3", vocab_size=len(tokenizer))
    assert len(pieces) + 1 <= config.hidden_size
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    ids = {p: tokenizer.convert_tokens_to_ids(p) for p in pieces}
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb.zero_()
        head.zero_()
        emb[start_id, 0] = SCALE
        for dim, piece in enumerate(pieces, start=1):
            emb[ids[piece], dim] = SCALE
        for script in scripts:
            head[ids[script[0]], 0] = SCALE
            for dim_of, nxt in zip(script, [*script[1:], None]):
                head[ids[nxt] if nxt is not None else config.eos_token_id, 1 + pieces.index(dim_of)] = SCALE
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    (path / "generation_config.json").write_text('{"eos_token_id": 0, "pad_token_id": 0, "do_sample": false}')
    return [ids[script[0]] for script in scripts]
