"""`LLM`: the offline API — generate for a list of prompts (text or token ids) and return finished results."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Optional, Sequence, Union

from tqdm.auto import tqdm

from tierlm.config import EngineConfig
from tierlm.engine.engine import Engine
from tierlm.engine.errors import RequestError
from tierlm.engine.outputs import RequestOutput
from tierlm.sampling_params import SamplingParams

Prompt = Union[str, Sequence[int]]


class LLM:
    """Offline batch generation: `LLM(model=DIR, **engine_options).generate(prompts, params)`.

    Keyword arguments are `EngineConfig` fields (the same names as the CLI flags).
    """

    def __init__(self, model: str, **options) -> None:
        self.engine = Engine(EngineConfig(model=model, **options))
        self.tokenizer = self.engine.tokenizer
        self._next_id = 0

    def _encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=True)
        return list(prompt)

    def default_sampling_params(self) -> SamplingParams:
        """`SamplingParams()` with the model's generation_config.json defaults (`--generation-config`): what
        `generate` uses when given no params."""
        return replace(SamplingParams(), **self.engine.generation.as_dict())

    def generate(self, prompts: Union[Prompt, Sequence[Prompt]],
                 params: Union[SamplingParams, Sequence[SamplingParams], None] = None,
                 use_tqdm: bool = False, priority: Optional[Sequence[int]] = None) -> list[RequestOutput]:
        """Run every prompt to completion. A bad prompt gets an output with `error` set (and
        finish_reason 'error'); the others are served normally. Results keep the input order.
        `priority` (one per prompt, as in vLLM) overrides the params' priority; it orders admission under
        `--schedule-policy priority`, lower first."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        params = params or self.default_sampling_params()
        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"got {len(plist)} SamplingParams for {len(prompts)} prompts")
        if priority is not None:
            if len(priority) != len(prompts):
                raise ValueError(f"got {len(priority)} priorities for {len(prompts)} prompts")
            plist = [replace(p, priority=prio) for p, prio in zip(plist, priority)]
        engine = self.engine
        results: dict[str, RequestOutput] = {}
        order, starts = [], {}
        for prompt, p in zip(prompts, plist):
            rid = str(self._next_id)
            self._next_id += 1
            order.append(rid)
            ids = self._encode(prompt)
            starts[rid] = time.perf_counter()
            results[rid] = RequestOutput(request_id=rid, prompt_token_ids=ids, text="", token_ids=[],
                                         finish_reason=None, num_cached_tokens=0, ttft=0.0,
                                         logprobs=[] if p.logprobs is not None else None)
            try:
                engine.add_request(rid, ids, p)
            except RequestError as e:
                results[rid].finish_reason, results[rid].error = "error", str(e)
        # a tqdm, even disabled, takes a lock and starts a monitor thread on its first instance in a process
        bar = tqdm(total=len(order), desc="Generating") if use_tqdm else None
        if bar is not None:  # requests refused on arrival are done already
            bar.update(sum(results[rid].finish_reason == "error" for rid in order))
        while engine.has_unfinished():
            for out in engine.step():
                res = results[out.request_id]
                if out.new_token_ids and not res.token_ids:
                    res.ttft = time.perf_counter() - starts[out.request_id]
                res.token_ids.extend(out.new_token_ids)
                res.text += out.new_text
                if out.new_logprobs:
                    res.logprobs.extend(out.new_logprobs)
                if out.prompt_logprobs is not None:
                    res.prompt_logprobs = out.prompt_logprobs
                res.num_cached_tokens = out.num_cached_tokens
                if out.finished:
                    res.finish_reason, res.error, res.stop_reason = out.finish_reason, out.error, out.stop_reason
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
        return [results[rid] for rid in order]

    def close(self) -> None:
        self.engine.close()
