"""Prompt logprobs (vLLM's `prompt_logprobs`; OpenAI's `echo` with `logprobs`): the log-probability of each prompt
token given the tokens before it, its rank, and the top-N alternatives, from the logits of the prompt positions a
prefill pass runs.

The plan names the positions to score (`StepPlan.score_index`: flat token indices of the pass) and the token that
follows each (`score_targets`); every rank computes their logits slice by slice (the LM head's collectives run on
all of them: the same plan gives each rank the same slices), and the controller's rank reads the results back.
Entry k of a request's list scores prompt token k from the logits at position k - 1 (entry 0 is None: nothing
comes before the first token). A position is scored once: a retracted request that runs its prompt again scores
only what it has not, and a request takes no cached prefix beyond the positions it has scored (`match_limit`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from tierlm.engine.outputs import TokenLogprob
from tierlm.engine.request import Req

SCORE_SLICE = 256  # positions per LM-head call: a slice's float32 log-softmax is SCORE_SLICE x vocab


@dataclass
class ScoreSpan:
    """`count` positions of `req` scored in one pass, from prompt position `first`, at flat index `flat_start`."""

    req: Req
    flat_start: int
    first: int
    count: int


@dataclass
class Scores:
    """A pass's scored positions on the device: the chosen token's logprob and rank, the top-N (values, ids)."""

    chosen: torch.Tensor
    rank: torch.Tensor
    top_values: Optional[torch.Tensor]
    top_ids: Optional[torch.Tensor]


def match_limit(req: Req) -> int:
    """How many of the request's tokens a prefix-cache match may cover: all but the last without prompt logprobs;
    with them, only positions already scored (a cached position's logits are never computed)."""
    limit = req.seq_len - 1
    return limit if req.prompt_logprobs is None else min(limit, len(req.prompt_logprobs) - 1)


def score_spans(reqs: list[Req], prefix_lens: list[int], extend_lens: list[int]) -> list[ScoreSpan]:
    """The positions of a prefill pass to score: per request, those it runs that predict a prompt token and that
    it has not scored yet."""
    spans, start = [], 0
    for r, p, n in zip(reqs, prefix_lens, extend_lens):
        if r.prompt_logprobs is not None:
            first, end = max(p, len(r.prompt_logprobs) - 1), min(p + n, r.prompt_len - 1)
            if end > first:
                spans.append(ScoreSpan(r, start + first - p, first, end - first))
        start += n
    return spans


def plan_fields(spans: list[ScoreSpan]) -> tuple[list[int], list[int], int]:
    """(score_index, score_targets, score_top) of a plan."""
    index, targets = [], []
    for s in spans:
        index += range(s.flat_start, s.flat_start + s.count)
        targets += s.req.token_ids[s.first + 1:s.first + 1 + s.count]
    return index, targets, max(s.req.params.prompt_logprobs or 0 for s in spans)


def score(compute_logits: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, index: torch.Tensor,
          targets: torch.Tensor, top: int) -> Scores:
    """Score the hidden states at `index` against `targets`, `SCORE_SLICE` positions at a time. A logprob is the
    float32 logit less the row's log-sum-exp: the log-softmax itself is never written out (reads, not a
    vocabulary-wide write and read per position)."""
    chosen, rank, values, ids = [], [], [], []
    for s in range(0, index.numel(), SCORE_SLICE):
        logits = compute_logits(hidden[index[s:s + SCORE_SLICE]]).float()
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        got = logits.gather(1, targets[s:s + SCORE_SLICE, None])
        chosen.append((got - lse).squeeze(1))
        rank.append((logits > got).sum(dim=-1) + 1)
        if top:
            v, i = logits.topk(top, dim=-1)
            values.append(v - lse)
            ids.append(i)
    return Scores(torch.cat(chosen), torch.cat(rank), torch.cat(values) if top else None,
                  torch.cat(ids) if top else None)


def record(spans: list[ScoreSpan], scores: Scores) -> None:
    """Append a pass's scores to its requests' lists (reads them back: the host waits for the pass)."""
    chosen, rank = scores.chosen.tolist(), scores.rank.tolist()
    values = scores.top_values.tolist() if scores.top_values is not None else None
    ids = scores.top_ids.tolist() if scores.top_ids is not None else None
    k = 0
    for span in spans:
        req, n_top = span.req, span.req.params.prompt_logprobs or 0
        for q in range(span.first, span.first + span.count):
            top = list(zip(ids[k][:n_top], values[k][:n_top])) if n_top else []  # n_top > 0: ids were taken
            req.prompt_logprobs.append(TokenLogprob(req.token_ids[q + 1], chosen[k], top, rank[k]))
            k += 1
