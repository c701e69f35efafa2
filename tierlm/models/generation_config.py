"""`GenerationDefaults`: the sampling defaults and end-of-sequence ids a model's `generation_config.json` states.

Model authors put their recommended sampling there (Qwen3: temperature 0.6, top_p 0.95, top_k 20) and, often,
end-of-sequence ids that config.json lacks (an instruct model's end-of-turn token). vLLM and SGLang apply both
by default; so does TierLM (`--generation-config auto`): a request that leaves a sampling parameter unset takes
the model's value (the repetition penalty too: Qwen2.5's files set one), and generation stops at any of the ids.
As in vLLM, `do_sample` is not read: the sampling values apply as written. `max_new_tokens` is reported, not
applied.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierlm.models.errors import ModelLoadError
from tierlm.validation import MAX_REPETITION_PENALTY, is_int, is_number

FILE = "generation_config.json"
# generation_config.json keys that are SamplingParams fields of the same name -> (lowest value, highest value)
SAMPLING_KEYS = {"temperature": (0.0, math.inf), "top_p": (0.0, 1.0), "top_k": (0, math.inf), "min_p": (0.0, 1.0),
                 "repetition_penalty": (0.0, MAX_REPETITION_PENALTY)}
OPEN_AT_ZERO = ("top_p", "repetition_penalty")  # keys whose lowest value is excluded
# read by vLLM, not applied here: a request's max_tokens defaults to the room its context leaves (16 for completions)
NOT_APPLIED = ("max_new_tokens",)


@dataclass(frozen=True)
class GenerationDefaults:
    """What a model's generation_config.json adds to serving: `sampling` (SamplingParams field, value) pairs for
    requests that leave them unset, `eos_token_ids` to stop at, and the keys read but `ignored`."""

    sampling: tuple[tuple[str, float], ...] = ()
    eos_token_ids: tuple[int, ...] = ()
    ignored: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, float]:
        return dict(self.sampling)

    def describe(self) -> str:
        """One log line: what is applied and what is not."""
        parts = [f"{k}={v:g}" for k, v in self.sampling]
        if self.eos_token_ids:
            parts.append(f"eos_token_id={list(self.eos_token_ids)}")
        text = ", ".join(parts) or "nothing"
        return text + (f" ({', '.join(self.ignored)} not applied)" if self.ignored else "")

    @staticmethod
    def from_dict(cfg: dict[str, Any], source: str = FILE) -> "GenerationDefaults":
        if not isinstance(cfg, dict):
            raise ModelLoadError(f"{source}: expected a JSON object, got {type(cfg).__name__}")
        sampling = []
        for key, (low, high) in SAMPLING_KEYS.items():
            value = cfg.get(key)
            if value is None:
                continue
            integral = key == "top_k"
            if (not is_number(value) or not low <= value <= high or (integral and not float(value).is_integer())
                    or (key in OPEN_AT_ZERO and value == low)):
                bound = "an integer at least 0" if integral else \
                    f"a number in {'(' if key in OPEN_AT_ZERO else '['}{low:g}, {high:g}]"
                raise ModelLoadError(f"{source}: {key} must be {bound}, got {value!r}")
            sampling.append((key, -1 if integral and value == 0 else (int(value) if integral else float(value))))
        eos = cfg.get("eos_token_id")
        eos_list = eos if isinstance(eos, list) else [] if eos is None else [eos]
        if not all(is_int(e) for e in eos_list):
            raise ModelLoadError(f"{source}: eos_token_id must be a token id or a list of them, got {eos!r}")
        ignored = tuple(k for k in NOT_APPLIED if cfg.get(k) not in (None, 1, 1.0))
        return GenerationDefaults(tuple(sampling), tuple(eos_list), ignored)

    @staticmethod
    def read(folder: Path) -> "GenerationDefaults":
        """The defaults of `folder`/generation_config.json; none when the file is absent."""
        path = Path(folder) / FILE
        if not path.is_file():
            return GenerationDefaults()
        try:
            cfg = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{path}: not a readable JSON file ({e})") from None
        return GenerationDefaults.from_dict(cfg, str(path))


def generation_defaults(setting: str, model_dir: Path) -> GenerationDefaults:
    """`--generation-config`: "auto" reads the model folder's file, "none" applies nothing, any other value is a
    folder holding a generation_config.json."""
    if setting == "none":
        return GenerationDefaults()
    if setting == "auto":
        return GenerationDefaults.read(model_dir)
    folder = Path(setting)
    if not (folder / FILE).is_file():
        raise ModelLoadError(f"--generation-config {setting}: no {FILE} in that folder (or give auto or none)")
    return GenerationDefaults.read(folder)
