"""`probe_options`: the `LLM` options a benchmark's quick probe starts an engine with, the one way they share."""
from __future__ import annotations


def probe_options(device: str, dummy: bool = True) -> dict:
    """No tokenizer, dummy weights (`dummy`; else the model's own), and on a CPU float32 with a small KV pool."""
    opts: dict = dict(skip_tokenizer_init=True, device=device)
    if dummy:
        opts["load_format"] = "dummy"
    if device == "cpu":
        opts.update(dtype="float32", kv_cache_gb=0.05)
    return opts
