"""Workloads of `tierlm bench serve`: random prompts of given lengths, or the first turn of ShareGPT-style
conversations from a JSON file.

Prompts are token ids unless a tokenizer is given (then text), so the server may run without a tokenizer
(`--skip-tokenizer-init`). Lengths follow `vllm bench serve`: random input and output lengths are uniform in
`[L * (1 - r), L * (1 + r)]` for `--random-range-ratio r` (0: every request exactly L), and ShareGPT prompts
are the first human turn, answered with as many tokens as the recorded reply had (or a fixed count).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from tierlm.cli.errors import CLIError

# Random token ids stay below this by default: every vocabulary in use is larger, so any model accepts them.
RANDOM_ID_LIMIT = 10_000
# ShareGPT filter of vllm bench serve (with a tokenizer): drop tiny turns and overlong conversations.
MIN_TOKENS, MAX_PROMPT_TOKENS, MAX_TOTAL_TOKENS = 4, 1024, 2048


@dataclass
class BenchRequest:
    """One request of the workload: its prompt (text, token ids, or chat messages), prompt length (None when
    not known here: the server's usage then says) and the number of tokens to ask for."""

    prompt: Union[str, list[int], list[dict[str, str]]]
    prompt_len: Optional[int]
    output_len: int


def spread_lengths(rng: random.Random, n: int, length: int, ratio: float) -> list[int]:
    """`n` lengths drawn uniformly from [length * (1 - ratio), length * (1 + ratio)], at least 1."""
    lo, hi = max(1, int(length * (1 - ratio))), max(1, int(length * (1 + ratio)))
    return [rng.randint(lo, hi) for _ in range(n)]


def random_requests(n: int, input_len: int, output_len: int, range_ratio: float, seed: int,
                    tokenizer: Any = None, vocab_size: int = RANDOM_ID_LIMIT) -> list[BenchRequest]:
    """`n` prompts of token ids drawn from [0, min(vocab_size, tokenizer size)) (decoded to text when a
    tokenizer is given)."""
    if n < 1 or input_len < 1 or output_len < 1:
        raise CLIError("--num-prompts, --random-input-len and --random-output-len must be >= 1")
    if not 0.0 <= range_ratio < 1.0:
        raise CLIError(f"--random-range-ratio must be in [0, 1), got {range_ratio}")
    if vocab_size < 1:
        raise CLIError(f"--random-vocab-size must be >= 1, got {vocab_size}")
    rng = random.Random(seed)
    ins, outs = spread_lengths(rng, n, input_len, range_ratio), spread_lengths(rng, n, output_len, range_ratio)
    limit = vocab_size if tokenizer is None else min(vocab_size, len(tokenizer))
    reqs = []
    for n_in, n_out in zip(ins, outs):
        ids = [rng.randrange(limit) for _ in range(n_in)]
        if tokenizer is None:
            reqs.append(BenchRequest(ids, n_in, n_out))
        else:  # text decodes back to about as many tokens; the server's usage gives the exact count
            text = tokenizer.decode(ids, skip_special_tokens=True)
            reqs.append(BenchRequest(text, len(tokenizer.encode(text, add_special_tokens=False)), n_out))
    return reqs


def _turn_text(turn: Any) -> Optional[str]:
    if not isinstance(turn, dict):
        return None
    text = turn.get("value", turn.get("content"))
    return text if isinstance(text, str) else None


def _conversations(path: str) -> list[tuple[str, str]]:
    """(first prompt, its reply) of every conversation with at least two turns."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CLIError(f"--dataset-path {path!r}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CLIError(f"--dataset-path {path!r}: not a readable JSON file ({e})") from None
    if not isinstance(doc, list):
        raise CLIError(f"--dataset-path {path!r}: expected a JSON list of conversations (ShareGPT format)")
    pairs = []
    for entry in doc:
        turns = entry.get("conversations", entry.get("conversation")) if isinstance(entry, dict) else None
        if isinstance(turns, list) and len(turns) >= 2:
            prompt, reply = _turn_text(turns[0]), _turn_text(turns[1])
            if prompt and reply is not None:
                pairs.append((prompt, reply))
    if not pairs:
        raise CLIError(f"--dataset-path {path!r}: no conversation with two turns "
                       '(expected [{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}])')
    return pairs


def sharegpt_requests(path: str, n: int, seed: int, tokenizer: Any = None,
                      output_len: Optional[int] = None) -> list[BenchRequest]:
    """`n` first turns of the file's conversations, shuffled with `seed`; without a tokenizer the prompts
    go as text of unknown length and `output_len` must be given."""
    if n < 1:
        raise CLIError("--num-prompts must be >= 1")
    if output_len is not None and output_len < 1:
        raise CLIError(f"--sharegpt-output-len must be >= 1, got {output_len}")
    if tokenizer is None and output_len is None:
        raise CLIError("--dataset-name sharegpt without --tokenizer needs --sharegpt-output-len (the reply "
                       "lengths are counted in tokens)")
    pairs = _conversations(path)
    random.Random(seed).shuffle(pairs)
    reqs: list[BenchRequest] = []
    for prompt, reply in pairs:
        if len(reqs) == n:
            break
        if tokenizer is None:
            reqs.append(BenchRequest(prompt, None, output_len))  # type: ignore[arg-type]
            continue
        n_in = len(tokenizer.encode(prompt, add_special_tokens=False))
        n_out = output_len or len(tokenizer.encode(reply, add_special_tokens=False))
        if n_in < MIN_TOKENS or (output_len is None and n_out < MIN_TOKENS):
            continue
        if n_in > MAX_PROMPT_TOKENS or n_in + n_out > MAX_TOTAL_TOKENS:
            continue
        reqs.append(BenchRequest(prompt, n_in, n_out))
    if not reqs:
        raise CLIError(f"--dataset-path {path!r}: no conversation fits the length limits (prompt of "
                       f"{MIN_TOKENS}..{MAX_PROMPT_TOKENS} tokens, at most {MAX_TOTAL_TOKENS} with the reply)")
    return reqs
