"""`Sampler`: turns a batch of logits into next tokens under each request's own sampling parameters.

Everything stays on the logits' device and no step reads device values back to the host: filters are
chosen from the (host-side) parameters, whose per-row values go up from pinned memory (`upload`), so the
sampler can run while the host prepares the next step.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from tierlm.sampling_params import SamplingParams
from tierlm.utils.upload import upload

# From this many temperature rows the fused race (`kernels.race_sample`) replaces torch's six passes; below,
# its two Triton launches cost the host more than those passes cost the device (benchmarks/bench_sampler.py).
FUSED_MIN_ROWS = 64


def _filter_probs(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Softmax of temperature-scaled logits with top-k, top-p and min-p filtering, renormalised per row."""
    device = logits.device
    temp = upload([max(p.temperature, 1e-5) for p in params], torch.float32, device)
    logits = logits.float() / temp[:, None]
    vocab = logits.shape[-1]
    top_k = [p.top_k if 0 < p.top_k < vocab else vocab for p in params]
    if any(k < vocab for k in top_k):
        k = upload(top_k, torch.int64, device)
        kth = torch.sort(logits, dim=-1, descending=True).values.gather(1, (k - 1)[:, None])
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if any(p.top_p < 1.0 for p in params):
        top_p = upload([p.top_p for p in params], torch.float32, device)
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        cum = sorted_p.cumsum(-1)
        drop_sorted = (cum - sorted_p) > top_p[:, None]  # keep the smallest set reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
    if any(p.min_p > 0 for p in params):
        min_p = upload([p.min_p for p in params], torch.float32, device)
        threshold = probs.max(dim=-1, keepdim=True).values * min_p[:, None]
        probs = probs.masked_fill(probs < threshold, 0.0)
    return probs / probs.sum(dim=-1, keepdim=True)


class Sampler:
    """Greedy, temperature, top-k, top-p, min-p. Unseeded rows share one draw (exponential race, one kernel);
    seeded rows draw from their own generator, so the same seed gives the same output whatever else is in
    the batch."""

    def __init__(self, device: torch.device, seed: int) -> None:
        self.generator = torch.Generator(device=device).manual_seed(seed)
        # keys of the fused race's calls (`kernels.race_sample`), drawn on the host: no device read per step
        self._race_keys = torch.Generator().manual_seed(seed)
        self._fused = device.type == "cuda" and torch.version.hip is None

    def warm_up(self, vocab: int, dtype: torch.dtype) -> None:
        """Build the fused race's kernels for logits of this shape's dtype, so the first large batch of
        temperature rows does not stop serving for a compile."""
        if self._fused:
            from tierlm.kernels.race_sample import race_sample

            logits = torch.zeros(FUSED_MIN_ROWS, vocab, dtype=dtype, device=self.generator.device)
            race_sample(logits, torch.ones(FUSED_MIN_ROWS, device=logits.device), 2**32)

    def sample(self, logits: torch.Tensor, params: Sequence[SamplingParams],
               generators: Sequence[Optional[torch.Generator]]) -> torch.Tensor:
        """Next token per row (int64 tensor on the logits' device). `logits` may be in the model's dtype:
        greedy rows take its argmax as is (widening is exact and keeps the order), the others are widened
        to float32 before any arithmetic."""
        # one pass over the batch (it runs every step): the sampled rows, their temperatures, whether any
        # filters its distribution and whether any has a generator of its own
        rows, temps, filtered, seeded = [], [], False, False
        for i, p in enumerate(params):
            if p.temperature != 0.0:  # not greedy
                rows.append(i), temps.append(p.temperature)
                filtered = filtered or p.top_k > 0 or p.top_p < 1.0 or p.min_p > 0
                seeded = seeded or generators[i] is not None
        if not rows:
            return logits.argmax(dim=-1)
        all_rows = len(rows) == len(params)
        sub = logits if all_rows else logits[upload(rows, torch.int64, logits.device)]
        sub_params = [params[i] for i in rows] if filtered else []
        temp = None if filtered else upload(temps, torch.float32, sub.device)
        if self._fused and len(rows) >= FUSED_MIN_ROWS and not filtered and not seeded:
            from tierlm.kernels.race_sample import race_sample

            key = int(torch.randint(2**32, 2**62, (1,), generator=self._race_keys))
            drawn = race_sample(sub, temp, key)
            return drawn if all_rows else self._merge(logits, rows, drawn)
        # Exponential race: argmax(p / E) with E ~ Exp(1) draws exactly from p (zero-probability tokens never win).
        noise = torch.empty_like(sub, dtype=torch.float32)
        if any(generators[i] is None for i in rows):
            noise.exponential_(generator=self.generator)
        for j, i in enumerate(rows):
            if generators[i] is not None:
                noise[j].exponential_(generator=generators[i])
        if filtered:
            drawn = (_filter_probs(sub, sub_params) / noise).argmax(dim=-1)
        else:  # same draw without a softmax: log(p / E) = logits / T - log E + const
            drawn = (sub.float() / temp[:, None] - noise.log_()).argmax(dim=-1)
        return drawn if all_rows else self._merge(logits, rows, drawn)

    @staticmethod
    def _merge(logits: torch.Tensor, rows: list[int], drawn: torch.Tensor) -> torch.Tensor:
        """Greedy tokens for every row, with the drawn ones in `rows`."""
        tokens = logits.argmax(dim=-1)
        tokens[upload(rows, torch.int64, logits.device)] = drawn
        return tokens

    @staticmethod
    def logprobs(logits: torch.Tensor, tokens: torch.Tensor, params: Sequence[SamplingParams]):
        """(chosen-token logprobs [B], top values [B, n], top ids [B, n]) of the unmodified distribution, or
        None when no request asked; device tensors, read by the host when the step is resolved."""
        n_top = [p.logprobs for p in params if p.logprobs is not None]
        if not n_top:
            return None
        logp = torch.log_softmax(logits.float(), dim=-1)
        chosen = logp.gather(1, tokens[:, None]).squeeze(1)
        k = max(max(n_top), 1)
        top_v, top_i = logp.topk(k, dim=-1)
        return chosen, top_v, top_i
