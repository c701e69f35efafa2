"""`Sampler`: turns a batch of logits into next tokens under each request's own sampling parameters.

Everything stays on the logits' device and no step reads device values back to the host: filters are
chosen from the (host-side) parameters, whose per-row values go up from pinned memory (`upload`), so the
sampler can run while the host prepares the next step.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Callable, Optional, Sequence

import torch

from tierlm.engine.logit_bias import Bans, with_logit_bias
from tierlm.engine.penalties import PenaltyBatch
from tierlm.kvcache.req_table import TokenSink
from tierlm.sampling_params import SamplingParams
from tierlm.utils.upload import upload

# Without a sink, from this many temperature rows the fused kernel (`kernels.race_sample`) replaces torch's six
# passes; below, its Triton launch costs the host more than those passes cost the device (benchmarks/
# bench_sampler.py). With a sink or penalties it always replaces them: it also takes the store's launch, or the
# penalties' dozen.
FUSED_MIN_ROWS = 64
# Penalized batches through the fused kernel on a GPU; False sends them through the torch path
# (`PenaltyBatch.adjust`, then `record`). `benchmarks/penalty_check.py` compares the two in the engine.
FUSED_PENALTIES = True
# A greedy batch's key: the kernel draws nothing for it, and a 64-bit value keeps it on the build sampling uses.
_NO_KEY = 2**32
_KEPT_TEMPERATURES = 8  # device vectors of one temperature kept for uniform batches (`Sampler._temperatures`)


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


def _dummy_sink_and_penalties(rows: int, vocab: int, device: torch.device) -> tuple[TokenSink, PenaltyBatch]:
    """A warm-up pass's token sink (row i writes `table[i % 2, i]`, a table whose row stride, at least 64, the
    engine's tables share) and penalties (row i in slot i % 2 of a zeroed table of marks)."""
    sites = torch.arange(rows, dtype=torch.int32, device=device)
    table = torch.zeros(2, max(rows, 64), dtype=torch.int32, device=device)
    marks = torch.zeros(2, vocab, dtype=torch.int32, device=device)
    return (TokenSink(table, sites.remainder(2), sites),
            PenaltyBatch(marks, sites.remainder(2), torch.ones(rows, 3, device=device)))


class Sampler:
    """Greedy, temperature, top-k, top-p, min-p. Unseeded rows share one draw (exponential race, one kernel);
    seeded rows draw from their own generator, so the same seed gives the same output whatever else is in
    the batch."""

    def __init__(self, device: torch.device, seed: int, fused_penalties: bool = FUSED_PENALTIES) -> None:
        self.generator = torch.Generator(device=device).manual_seed(seed)
        # keys of the fused kernel's calls (`kernels.race_sample`), drawn on the host: no device read per step
        self._race_keys = random.Random(seed)
        self._fused = device.type == "cuda" and torch.version.hip is None
        self.fused_penalties = fused_penalties  # penalized batches may take the fused kernel
        self._scratch = None  # the fused kernel's counters and slice buffers, made at its first call
        self._uniform: dict[float, torch.Tensor] = {}  # temperature -> a device vector of it (`_temperatures`)

    def warm_up(self, vocab: int, dtype: torch.dtype) -> None:
        """Build the fused kernel's variants (greedy, sampling; with and without a sink; with a sink, also with
        penalties, as the engine launches it) for logits of this dtype, so that no batch stops serving for a
        compile. Also one pass of each torch path a request can ask for (filters, a seed, a logit bias, penalties
        without the fused kernel, logprobs), so the first such request does not load their kernels."""
        self._warm_torch(vocab, dtype)
        if self._fused:
            dev = self.generator.device
            logits = torch.zeros(FUSED_MIN_ROWS, vocab, dtype=dtype, device=dev)
            stored, penalties = _dummy_sink_and_penalties(FUSED_MIN_ROWS, vocab, dev)
            variants = [(None, None), (stored, None)] + ([(stored, penalties)] if self.fused_penalties else [])
            for sink, pen in variants:
                for temp in (0.0, 1.0):
                    self._pick(logits, [temp] * FUSED_MIN_ROWS, sink, pen)

    def _warm_torch(self, vocab: int, dtype: torch.dtype) -> None:
        """Two passes of four rows (greedy and biased, sampled, seeded, penalized) through `sample`'s torch path
        with a sink, then their logprobs: filtered with every row's penalties, then unfiltered with only row 3's.
        The generator is left as it was."""
        dev = self.generator.device
        state = self.generator.get_state()
        logits = torch.randn(4, vocab, device=dev, generator=torch.Generator(dev).manual_seed(0)).to(dtype)
        sink, every_row = _dummy_sink_and_penalties(4, vocab, dev)
        for filters, penalties in (({"top_k": 5, "top_p": 0.9, "min_p": 0.01}, every_row),
                                   ({}, dataclasses.replace(every_row, rows=torch.tensor([3], device=dev)))):
            params = [SamplingParams(temperature=0.0, logit_bias={0: 1.0}, logprobs=2),
                      SamplingParams(temperature=1.0, **filters), SamplingParams(temperature=1.0, seed=0),
                      SamplingParams(temperature=1.0, repetition_penalty=1.1)]
            gens = [None, None, torch.Generator(dev).manual_seed(0), None]
            tokens = self.sample(logits, params, gens, sink, penalties)
            self.logprobs(logits, tokens, params)
        self.generator.set_state(state)

    def _pick(self, logits: torch.Tensor, temps: Optional[list[float]], sink: Optional[TokenSink],
              penalties: Optional[PenaltyBatch] = None) -> torch.Tensor:
        """The fused kernel's tokens: every row greedy (`temps` None or all 0), else per-row temperatures."""
        from tierlm.kernels.race_sample import PickScratch, pick_tokens

        if self._scratch is None:
            self._scratch = PickScratch(logits.device)
        greedy = temps is None or not any(temps)
        temp = None if greedy else self._temperatures(temps, logits.device)
        key = _NO_KEY if greedy else self._race_keys.randrange(2**32, 2**62)
        store = None if sink is None else (sink.table, sink.rows, sink.positions)
        pen = None if penalties is None else (penalties.marks, penalties.slots, penalties.factors.view(-1))
        return pick_tokens(logits, temp, key, self._scratch, store, penalties=pen)

    def _temperatures(self, temps: list[float], device: torch.device) -> torch.Tensor:
        """`temps` as a device float32 vector. A batch at one temperature (a steady stream of like requests) reads
        a vector of it kept on the device, so its steps upload nothing; the few temperatures last seen are kept."""
        n, t = len(temps), temps[0]
        if temps.count(t) != n:
            return upload(temps, torch.float32, device)
        kept = self._uniform.get(t)
        if kept is None or kept.numel() < n:
            if kept is None and len(self._uniform) >= _KEPT_TEMPERATURES:
                self._uniform.clear()
            kept = self._uniform[t] = torch.full((max(n, 256),), t, dtype=torch.float32, device=device)
        return kept[:n]

    def sample(self, logits: torch.Tensor, params: Sequence[SamplingParams],
               generators: Sequence[Optional[torch.Generator]], sink: Optional[TokenSink] = None,
               penalties: Optional[PenaltyBatch] = None, bans: Optional[Bans] = None,
               masker: Optional[Callable[[torch.Tensor], None]] = None) -> torch.Tensor:
        """Next token per row (int64 tensor on the logits' device); with `sink`, also written to its sites.
        `logits` may be in the model's dtype: greedy rows take its argmax as is (widening is exact and keeps the
        order), the others are widened to float32 before any arithmetic. `penalties`: the rows' penalties
        (`engine.penalties`), applied before the pick and advanced by the picked tokens; each row's `logit_bias`
        before them (`engine.logit_bias`, on the torch path), and `bans`: per row, the tokens it may not pick now
        (a request under its `min_tokens`), or None where no row has any; `masker` masks the float32 logits in
        place to what guided rows may pick next (`engine.guided`)."""
        # one pass over the batch (it runs every step): the sampled rows, their temperatures, whether any
        # filters its distribution and whether any has a generator of its own
        rows, temps, filtered, seeded, biased = [], [], False, False, False
        for i, p in enumerate(params):
            if p.temperature != 0.0:  # not greedy
                rows.append(i), temps.append(p.temperature)
                filtered = filtered or p.top_k > 0 or p.top_p < 1.0 or p.min_p > 0
                seeded = seeded or generators[i] is not None
            biased = biased or bool(p.logit_bias)
        biased = biased or bans is not None or masker is not None
        fusable = (self._fused and not filtered and not seeded and not biased
                   and (penalties is None or self.fused_penalties))
        if fusable and (sink is not None or penalties is not None or len(rows) >= FUSED_MIN_ROWS):
            return self._pick(logits, [p.temperature for p in params] if rows else None, sink, penalties)
        if biased:
            logits = with_logit_bias(logits, params, bans)  # a float32 copy of the pass's own
            if masker is not None:
                masker(logits)
        if penalties is not None:
            logits = penalties.adjust(logits, own=biased)
        tokens = self._sample(logits, params, generators, rows, temps, filtered)
        if penalties is not None:
            penalties.record(tokens)
        if sink is not None:
            sink.write(tokens)
        return tokens

    def _sample(self, logits: torch.Tensor, params: Sequence[SamplingParams],
                generators: Sequence[Optional[torch.Generator]], rows: list[int], temps: list[float],
                filtered: bool) -> torch.Tensor:
        """`sample` with torch: greedy rows by argmax, the sampled `rows` by the exponential race."""
        if not rows:
            return logits.argmax(dim=-1)
        all_rows = len(rows) == len(params)
        sub = logits if all_rows else logits[upload(rows, torch.int64, logits.device)]
        sub_params = [params[i] for i in rows] if filtered else []
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
            temp = self._temperatures(temps, sub.device)
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
