"""`SamplingParams`: how one request is decoded and when it stops."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tierlm.validation import check_sampling


@dataclass
class SamplingParams:
    """Per-request decoding settings.

    `temperature == 0` means greedy. `seed` makes sampling reproducible for this request alone, whatever
    else is in the batch. `max_tokens=None` means "up to the context limit". `priority` orders admission
    when the engine runs with `--schedule-policy priority` (lower first, as in vLLM); other policies ignore it.
    The three penalties follow vLLM: the repetition penalty counts prompt and output tokens, presence and
    frequency only output tokens (as OpenAI defines them); their neutral values turn them off. `logit_bias`
    (OpenAI's) adds each listed token's bias, in [-100, 100], to its logit before the penalties and sampling.
    `min_tokens` (vLLM's) keeps the end-of-sequence ids and `stop_token_ids` from being picked, and stop strings
    from matching, until that many tokens were generated; `include_stop_str_in_output` keeps the stop string (or
    the stop token's text) that ended the request at the end of its text.
    """

    max_tokens: Optional[int] = 16
    min_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    # > 1 discourages tokens already in the prompt or the output (logits divided if positive, multiplied if not)
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from every token already in the output
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per occurrence of a token in the output
    logit_bias: Optional[dict[int, float]] = None  # token id -> bias added to its logit (OpenAI's)
    seed: Optional[int] = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: Optional[int] = None
    # vLLM's: the logprob of each prompt token given the ones before it (and its top-N alternatives); the request
    # then takes no cached prefix (its prompt runs whole)
    prompt_logprobs: Optional[int] = None
    # SGLang's: a JSON schema (as JSON text) the output must follow (`engine.guided`); '{"type": "object"}' for any
    # JSON object (OpenAI's response_format json_object)
    json_schema: Optional[str] = None
    regex: Optional[str] = None  # SGLang's: a regular expression the whole output matches (not with json_schema)
    # SGLang's (vLLM's guided_grammar): an EBNF grammar (root rule `root`) the whole output follows; one of the three
    ebnf: Optional[str] = None
    skip_special_tokens: bool = True
    detokenize: bool = True  # False: token ids only (benchmarks); stop strings then cannot be used
    priority: int = 0  # admission order under --schedule-policy priority: lower first

    def validate(self, vocab_size: Optional[int] = None) -> None:
        """Raise `RequestError` (a ValueError) naming the first invalid parameter; see `tierlm.validation`."""
        check_sampling(self, vocab_size)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalized(self) -> bool:
        """Any penalty away from its neutral value (the logits then depend on the tokens seen so far)."""
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
