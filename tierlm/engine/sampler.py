"""`Sampler`: turns a batch of logits into next tokens under each request's own sampling parameters."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from tierlm.engine.outputs import TokenLogprob
from tierlm.sampling_params import SamplingParams


def _filter_probs(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Softmax of temperature-scaled logits with top-k, top-p and min-p filtering, renormalised per row."""
    device = logits.device
    temp = torch.tensor([max(p.temperature, 1e-5) for p in params], dtype=torch.float32, device=device)
    logits = logits / temp[:, None]
    vocab = logits.shape[-1]
    top_k = [p.top_k if p.top_k > 0 else vocab for p in params]
    if any(k < vocab for k in top_k):
        k = torch.tensor(top_k, device=device).clamp(max=vocab)
        kth = torch.sort(logits, dim=-1, descending=True).values.gather(1, (k - 1)[:, None])
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device)
    if bool((top_p < 1.0).any()):
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        cum = sorted_p.cumsum(-1)
        drop_sorted = (cum - sorted_p) > top_p[:, None]  # keep the smallest set reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
    min_p = torch.tensor([p.min_p for p in params], dtype=torch.float32, device=device)
    if bool((min_p > 0).any()):
        threshold = probs.max(dim=-1, keepdim=True).values * min_p[:, None]
        probs = probs.masked_fill(probs < threshold, 0.0)
    return probs / probs.sum(dim=-1, keepdim=True)


class Sampler:
    """Greedy, temperature, top-k, top-p, min-p; seeded requests draw from their own generator so the
    same seed gives the same output whatever else is in the batch."""

    def __init__(self, device: torch.device, seed: int) -> None:
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def sample(self, logits: torch.Tensor, params: Sequence[SamplingParams],
               generators: Sequence[Optional[torch.Generator]]) -> torch.Tensor:
        """Next token per row (int64 tensor on the logits' device)."""
        tokens = logits.argmax(dim=-1)
        sampled_rows = [i for i, p in enumerate(params) if not p.greedy]
        if not sampled_rows:
            return tokens
        idx = torch.tensor(sampled_rows, device=logits.device)
        probs = _filter_probs(logits[idx], [params[i] for i in sampled_rows])
        for j, i in enumerate(sampled_rows):
            gen = generators[i] or self.generator
            tokens[i] = torch.multinomial(probs[j], 1, generator=gen)[0]
        return tokens

    @staticmethod
    def logprobs(logits: torch.Tensor, tokens: torch.Tensor, params: Sequence[SamplingParams]) -> list[Optional[TokenLogprob]]:
        """Log-probabilities (of the unmodified distribution) of the chosen tokens and top-N alternatives."""
        wanted = [i for i, p in enumerate(params) if p.logprobs is not None]
        out: list[Optional[TokenLogprob]] = [None] * len(params)
        if not wanted:
            return out
        idx = torch.tensor(wanted, device=logits.device)
        logp = torch.log_softmax(logits[idx].float(), dim=-1)
        n_top = max(params[i].logprobs for i in wanted)
        top_v, top_i = logp.topk(max(n_top, 1), dim=-1) if n_top > 0 else (None, None)
        chosen = logp.gather(1, tokens[idx][:, None]).squeeze(1).tolist()
        top_v = top_v.tolist() if top_v is not None else None
        top_i = top_i.tolist() if top_i is not None else None
        for j, i in enumerate(wanted):
            k = params[i].logprobs
            top = list(zip(top_i[j][:k], top_v[j][:k])) if k and top_v is not None else []
            out[i] = TokenLogprob(token_id=int(tokens[i]), logprob=chosen[j], top=top)
        return out
