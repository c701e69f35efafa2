"""Finding a checkpoint (local directory or hub id) and loading its safetensors into a model.

The model declares its weight mapping (`weight_mapping()`: checkpoint name fragment -> fused parameter and
shard id) and each fused module its `shard_range`; nothing here is specific to one architecture. A fragment
may span several name parts and hold one `*`, an integer in the name giving the position along the fused
parameter's first dimension (`experts.*.gate_proj.weight` -> `experts_gate_up[e]`, rows of shard 0); a shard
id of None takes that whole position."""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import torch
from tqdm.auto import tqdm

from tierlm.models.errors import ModelLoadError

logger = logging.getLogger(__name__)
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt"]


BUILTIN_PREFIX = "builtin:"


@contextlib.contextmanager
def building_in(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Tensors created inside without a device or dtype take `device` and `dtype`: a model is built in its
    serving dtype on its device, never first in float32 (twice a bf16 model's memory: a 30B-parameter MoE
    model's float32 copy does not fit an 80 GB GPU). Tables that must stay float32 (rotary, routing) ask for it
    explicitly. The default dtype is the process's: nothing else may build tensors meanwhile."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(before)


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


def _iter_tensors(files: list[Path]) -> Iterator[tuple[str, Path, Any]]:
    """(name, file, open safetensors file) of every checkpoint tensor: nothing is read until asked for, so
    a tensor-parallel rank reads only its own part."""
    from safetensors import SafetensorError, safe_open

    for f in files:
        try:
            with safe_open(str(f), framework="pt") as sf:
                for name in sf.keys():
                    yield name, f, sf
        except (OSError, RuntimeError, ValueError, SafetensorError) as e:  # e.g. a truncated file
            if isinstance(e, ModelLoadError):
                raise
            raise ModelLoadError(f"cannot read safetensors file {f}: {e}") from None


def load_weights(model: torch.nn.Module, model_dir: Path, show_progress: bool = True) -> None:
    """Copy checkpoint tensors into `model`; fails naming the file and tensor that is missing or mismatched."""
    params = dict(model.named_parameters())
    rules = _rules(model.weight_mapping())
    loaded: set[tuple] = set()
    files = _weight_files(model_dir)
    bar = tqdm(total=len(files), desc="Loading safetensors", unit="file", disable=not show_progress)
    current: Optional[Path] = None
    for name, file, sf in _iter_tensors(files):
        if file != current:
            if current is not None:
                bar.update(1)
            current = file
        target = _target(name, model, rules)
        if target is None:
            logger.debug("ignoring checkpoint tensor %s", name)
            continue
        key, index, owner, shard = target
        if key not in params:
            logger.debug("ignoring checkpoint tensor %s (no parameter %s)", name, key)
            continue
        dest = params[key].data
        if index is not None:
            if index >= dest.shape[0]:
                raise ModelLoadError(f"tensor {name!r} in {file.name}: index {index} is out of range, the model "
                                     f"has {dest.shape[0]}")
            dest = dest[index]
        module = model.get_submodule(owner)
        rows = None if shard is None else module.shard_range(shard)
        if rows is not None:
            dest = dest[rows[0]:rows[1]]
        tensor, dest = _read_shard(sf, name, params[key], module, shard, index, dest)
        if tuple(dest.shape) != tuple(tensor.shape):
            raise ModelLoadError(f"tensor {name!r} in {file.name} has shape {tuple(tensor.shape)}, "
                                 f"the model expects {tuple(dest.shape)}")
        dest.copy_(tensor.to(dtype=dest.dtype))
        loaded.add((key, index, rows))
    bar.update(1)
    bar.close()
    missing = _missing(model, rules, loaded)
    if missing:
        raise ModelLoadError(f"checkpoint {model_dir} lacks tensor(s): {', '.join(missing[:8])}"
                             + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))


def _read_shard(sf: Any, name: str, param: torch.nn.Parameter, module: torch.nn.Module, shard: object,
                index: Optional[int], dest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Read this rank's part of checkpoint tensor `name` (all of it for an unsharded parameter) and the part
    of `dest` it fills: a sharded parameter (`tp_dim`, `tp_index`, see `tierlm.parallel.linear`) takes slice
    `tp_index` of its own size along `tp_dim`; the last rank of a padded vocabulary gets fewer rows."""
    dim = getattr(param, "tp_dim", None)
    if dim is None:
        return sf.get_tensor(name), dest
    if index is not None:
        raise ModelLoadError(f"tensor {name!r}: stacked parameters cannot be sharded over ranks")
    lazy = sf.get_slice(name)
    shape = lazy.get_shape()
    if len(shape) != dest.dim():
        raise ModelLoadError(f"tensor {name!r} has {len(shape)} dimensions, the model expects {dest.dim()}")
    which = module.tp_index(shard) if shard is not None and hasattr(module, "tp_index") else param.tp_index
    size = dest.shape[dim]
    start = min(which * size, shape[dim])
    stop = min(start + size, shape[dim])
    sel = [slice(None)] * len(shape)
    sel[dim] = slice(start, stop)
    tensor = lazy[tuple(sel)]
    if stop - start < size:  # vocabulary padding: the rows beyond the checkpoint stay zero
        dest.narrow(dim, stop - start, size - (stop - start)).zero_()
        dest = dest.narrow(dim, 0, stop - start)
    return tensor, dest


# One mapping entry: (checkpoint name fragment split on ".", fused parameter name, shard id or None).
Rule = tuple[list[str], str, object]


def _rules(mapping: Mapping[str, tuple[str, object]]) -> list[Rule]:
    """The model's mapping, longest fragment first so that `experts.*.gate_proj` wins over `gate_proj`."""
    rules = [(frag.split("."), fused, shard) for frag, (fused, shard) in mapping.items()]
    return sorted(rules, key=lambda r: -len(r[0]))


def _match(frag: list[str], parts: list[str]) -> Optional[list[int]]:
    """The integers the `*`s of `frag` stood for when `parts` starts with `frag` (empty: no `*`), else None."""
    if len(parts) < len(frag):
        return None
    indices = []
    for f, p in zip(frag, parts):
        if f == "*" and p.isdigit():
            indices.append(int(p))
        elif f != p:
            return None
    return indices


def _target(name: str, model: torch.nn.Module, rules: list[Rule]):
    """Map a checkpoint tensor name to (parameter key, index along its first dimension or None, path of the
    module whose `shard_range` gives the rows, shard id or None); None for tensors the model does not use.

    A mapping fragment found in the name is replaced by its fused parameter name; what precedes it names the
    module owning that parameter, what follows (`weight`, `bias`) is kept."""
    if "rotary_emb" in name:
        return None
    if name == "lm_head.weight" and model.config.tie_word_embeddings:
        return None
    parts = name.split(".")
    for i in range(len(parts)):
        for frag, fused, shard in rules:
            hit = _match(frag, parts[i:])
            if hit is not None:
                key = ".".join(parts[:i] + [fused] + parts[i + len(frag):])
                return key, (hit[0] if hit else None), ".".join(parts[:i]), shard
    return name, None, "", None


def _missing(model: torch.nn.Module, rules: list[Rule], loaded: set[tuple]) -> list[str]:
    """Checkpoint names of every expected piece not loaded: the mapping run backwards from each parameter."""
    missing = []
    for key, param in model.named_parameters():
        parts = key.split(".")
        pieces = [(key, None, None)]
        for i, part in enumerate(parts):
            found = [r for r in rules if r[1] == part]
            if not found:
                continue
            owner, rest = parts[:i], parts[i + 1:]
            pieces = []
            for frag, _, shard in found:
                rows = None if shard is None else model.get_submodule(".".join(owner)).shard_range(shard)
                indices = range(param.shape[0]) if "*" in frag else [None]
                for index in indices:
                    ckpt = [str(index) if f == "*" else f for f in frag]
                    pieces.append((".".join(owner + ckpt + rest), index, rows))
            break
        missing += [ckpt for ckpt, index, rows in pieces if (key, index, rows) not in loaded]
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
