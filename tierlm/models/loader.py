"""Finding a checkpoint (local directory or hub id) and loading its safetensors into a model.

The model declares its weight mapping (`weight_mapping()`: checkpoint projection name -> fused parameter and
shard) and each fused module its `shard_range`; nothing here is specific to one architecture."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator, Optional

import torch
from tqdm.auto import tqdm

from tierlm.models.errors import ModelLoadError

logger = logging.getLogger(__name__)
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt"]


BUILTIN_PREFIX = "builtin:"


def builtin_configs() -> list[str]:
    root = Path(__file__).resolve().parent.parent / "configs"
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())


def resolve_model_dir(model: str, revision: Optional[str] = None, need_weights: bool = True) -> Path:
    """A local directory as is; `builtin:NAME` a shipped config (weights must be dummy); otherwise a hub id,
    downloaded (or taken from the local hub cache)."""
    if model.startswith(BUILTIN_PREFIX):
        name = model[len(BUILTIN_PREFIX):]
        if name not in builtin_configs():
            raise ModelLoadError(f"unknown builtin config {name!r}; shipped: {', '.join(builtin_configs())}")
        if need_weights:
            raise ModelLoadError(f"{model} has no weights: use --load-format dummy")
        return Path(__file__).resolve().parent.parent / "configs" / name
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    looks_local = model.startswith((".", "/", "~")) or os.sep in model.strip("/").split("/", 1)[-1] or path.exists()
    if looks_local or model.count("/") != 1:
        raise ModelLoadError(f"model directory {model!r} does not exist (and it is not a hub id like 'org/name')")
    try:
        from huggingface_hub import snapshot_download
        patterns = HUB_PATTERNS if need_weights else [p for p in HUB_PATTERNS if "safetensors" not in p]
        return Path(snapshot_download(model, revision=revision, allow_patterns=patterns))
    except Exception as e:  # network, auth, missing repo: all end up as one clear message
        raise ModelLoadError(f"could not download model {model!r} from the hub: {type(e).__name__}: {e}") from None


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ModelLoadError(f"{index} is not a valid safetensors index: {e}") from None
        files = sorted(set(weight_map.values()))
        for name in files:
            if not (model_dir / name).is_file():
                raise ModelLoadError(f"safetensors shard {name!r} listed in {index.name} is missing from {model_dir}")
        return [model_dir / f for f in files]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no *.safetensors weights in {model_dir} (use --load-format dummy for random weights)")
    return files


def _iter_tensors(files: list[Path]) -> Iterator[tuple[str, Path, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    for f in files:
        try:
            with safe_open(str(f), framework="pt") as sf:
                for name in sf.keys():
                    yield name, f, sf.get_tensor(name)
        except (OSError, RuntimeError, ValueError, SafetensorError) as e:  # e.g. a truncated file
            if isinstance(e, ModelLoadError):
                raise
            raise ModelLoadError(f"cannot read safetensors file {f}: {e}") from None


def load_weights(model: torch.nn.Module, model_dir: Path, show_progress: bool = True) -> None:
    """Copy checkpoint tensors into `model`; fails naming the file and tensor that is missing or mismatched."""
    params = dict(model.named_parameters())
    loaded: set[str] = set()
    files = _weight_files(model_dir)
    total = sum(1 for _ in files)
    bar = tqdm(total=total, desc="Loading safetensors", unit="file", disable=not show_progress)
    current: Optional[Path] = None
    for name, file, tensor in _iter_tensors(files):
        if file != current:
            if current is not None:
                bar.update(1)
            current = file
        target, rows, key = _target(name, model)
        if target is None:
            logger.debug("ignoring checkpoint tensor %s", name)
            continue
        if key not in params:
            logger.debug("ignoring checkpoint tensor %s (no parameter %s)", name, key)
            continue
        param = params[key]
        dest = param.data if rows is None else param.data[rows[0]:rows[1]]
        if tuple(dest.shape) != tuple(tensor.shape):
            raise ModelLoadError(f"tensor {name!r} in {file.name} has shape {tuple(tensor.shape)}, "
                                 f"the model expects {tuple(dest.shape)}")
        dest.copy_(tensor.to(dtype=dest.dtype))
        loaded.add(key if rows is None else f"{key}:{rows}")
    bar.update(1)
    bar.close()
    missing = _missing(model, loaded)
    if missing:
        raise ModelLoadError(f"checkpoint {model_dir} lacks tensor(s): {', '.join(missing[:8])}"
                             + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))


def _target(name: str, model: torch.nn.Module):
    """Map a checkpoint tensor name to (module path, row range in a fused param or None, parameter key)."""
    if "rotary_emb" in name:
        return None, None, None
    if name == "lm_head.weight" and model.config.tie_word_embeddings:
        return None, None, None
    stacked = model.weight_mapping()
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part in stacked:
            fused, shard = stacked[part]
            key = ".".join(parts[:i] + [fused] + parts[i + 1:])
            owner = model.get_submodule(".".join(parts[:i]))
            return key, owner.shard_range(shard), key
    return name, None, name


def _missing(model: torch.nn.Module, loaded: set[str]) -> list[str]:
    shards: dict[str, list[tuple[str, object]]] = {}  # fused parameter name -> (checkpoint name, shard id)
    for ckpt, (fused, shard) in model.weight_mapping().items():
        shards.setdefault(fused, []).append((ckpt, shard))
    missing = []
    for key, _ in model.named_parameters():
        if key in loaded:
            continue
        owner_path, fused, _kind = key.rsplit(".", 2)
        if fused in shards:
            owner = model.get_submodule(owner_path)
            missing += [key.replace(fused, ckpt) for ckpt, shard in shards[fused]
                        if f"{key}:{owner.shard_range(shard)}" not in loaded]
            continue
        missing.append(key)
    return missing


def init_dummy_weights(model: torch.nn.Module, seed: int) -> None:
    """Random weights of the configured shape (norms at 1), reproducible from `seed`."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
