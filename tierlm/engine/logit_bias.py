"""`with_logit_bias`: a pass's logits with each request's OpenAI `logit_bias` added and the tokens it may not pick
yet (`min_tokens`: its stop ids) masked.

Applied before the penalties and sampling, as vLLM applies it (so a biased token is then penalized like any
other); logprobs are taken from the logits before it. Stateless: each pass uploads its rows' (row, token, bias)
triples in one copy, so overlap scheduling and retraction need nothing from it. A masked token gets -inf, which
no bias or penalty moves and no sampling method picks.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from tierlm.sampling_params import SamplingParams
from tierlm.utils.upload import upload

Bans = Sequence[Optional[Sequence[int]]]  # per row: the token ids it may not pick in this pass, or None


def with_logit_bias(logits: torch.Tensor, params: Sequence[SamplingParams],
                    bans: Optional[Bans] = None) -> torch.Tensor:
    """`logits` `[B, vocab]` as float32 with row i's `params[i].logit_bias` added and `bans[i]` set to -inf (a new
    tensor; the input is left as it was); other rows are widened exactly and otherwise untouched."""
    rows, tokens, biases = [], [], []
    for i, p in enumerate(params):
        if p.logit_bias:
            rows += [i] * len(p.logit_bias)
            tokens += p.logit_bias.keys()
            biases += p.logit_bias.values()
        if bans is not None and bans[i]:
            rows += [i] * len(bans[i])
            tokens += bans[i]
            biases += [-math.inf] * len(bans[i])
    out = logits.to(torch.float32, copy=True)
    if rows:
        n = len(rows)
        packed = upload(rows + tokens, torch.int64, logits.device)
        out.index_put_((packed[:n], packed[n:]), upload(biases, torch.float32, logits.device), accumulate=True)
    return out
