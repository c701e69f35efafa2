"""Loading the tokenizer of a model (local directory or hub id) with a clear error when it is unusable."""
from __future__ import annotations

from typing import Optional

from tierlm.engine.errors import ModelLoadError


def load_tokenizer(name_or_dir: str, revision: Optional[str] = None):
    """A `transformers` fast tokenizer; the chat template comes with it when the model ships one."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_dir, revision=revision, use_fast=True)
    except Exception as e:  # transformers raises many types for a bad directory
        raise ModelLoadError(f"cannot load a tokenizer from {name_or_dir}: {type(e).__name__}: {e}") from None
