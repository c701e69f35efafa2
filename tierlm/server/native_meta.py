"""SGLang's `meta_info` of a `/generate` answer (what SGLang's clients and its router's users read): the request id,
the finish reason as `{"type", "matched" | "length" | "message"}`, token counts, the latency, and with
`return_logprob` each token's logprob as `[logprob, token id, text or null]` (top alternatives the same way)."""
from __future__ import annotations

from typing import Any, Optional

from tierlm.engine.outputs import TokenLogprob


def finish_info(reason: Optional[str], stop_reason: Any, last_id: Optional[int], completion_tokens: int,
                error: Optional[str] = None) -> Optional[dict[str, Any]]:
    """SGLang's finish reason: a stop string or stop token `matched` (an end-of-sequence token is its id),
    the `length` reached, or an abort's `message`; None while the request runs."""
    if reason is None:
        return None
    if reason == "stop":
        return {"type": "stop", "matched": stop_reason if stop_reason is not None else last_id}
    if reason == "length":
        return {"type": "length", "length": completion_tokens}
    return {"type": "abort", "message": error or reason}


def triples(tokenizer: Any, lps: list[Optional[TokenLogprob]], first_id: Optional[int], with_text: bool,
            top: int) -> tuple[list[list[Any]], Optional[list[Any]]]:
    """(per token `[logprob, id, text]`, per token its top `top` alternatives alike, or None without `top`);
    `first_id` is the token of a None entry (a prompt's first, which nothing precedes)."""
    def one(token_id: int, logprob: Optional[float]) -> list[Any]:
        text = tokenizer.decode([token_id], skip_special_tokens=False) if with_text and tokenizer else None
        return [logprob, token_id, text]

    tokens, tops = [], ([] if top else None)
    for lp in lps:
        if lp is None:
            tokens.append(one(first_id, None))
            if tops is not None:
                tops.append(None)
            continue
        tokens.append(one(lp.token_id, lp.logprob))
        if tops is not None:
            tops.append([one(t, v) for t, v in lp.top[:top]])
    return tokens, tops


def meta_info(rid: str, result: dict[str, Any], elapsed_s: float, logprobs: Optional[dict[str, Any]] = None
              ) -> dict[str, Any]:
    """`meta_info` from a request's `result` (`finish_reason`, `stop_reason`, `ids`, `prompt`, `output`, `cached`,
    `error`) and, with `return_logprob`, its `logprobs` fields."""
    ids = result["ids"]
    info = {"id": rid, "finish_reason": finish_info(result["finish_reason"], result["stop_reason"],
                                                    ids[-1] if ids else None, result["output"], result["error"]),
            "prompt_tokens": result["prompt"], "completion_tokens": result["output"],
            "cached_tokens": result["cached"], "e2e_latency": round(elapsed_s, 6)}
    return {**info, **(logprobs or {})}
