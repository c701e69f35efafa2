"""The messages between the HTTP frontend and the engine process, encoded with msgpack (never pickle).

Frontend -> engine:  ADD {rid, ids, params} | ABORT {rid} | STATS {qid} | SHUTDOWN
Engine -> frontend:  OUTPUTS {outs: [row, ...]} (one message per engine step)
                     | REJECT {rid, status, msg, param, code}
                     | STATS {qid, stats}
Start-up (over a pipe): READY {info} | FATAL {msg}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import msgpack

from tierlm.engine.outputs import StepOutput, TokenLogprob
from tierlm.sampling_params import SamplingParams

ADD, ABORT, STATS, SHUTDOWN, OUTPUTS, REJECT, READY, FATAL = (
    "add", "abort", "stats", "shutdown", "outputs", "reject", "ready", "fatal")

_PARAM_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))


@dataclass
class Rejected:
    """The engine refused a request before running it (queue full, bad parameters, prompt too long)."""

    request_id: str
    status: int
    message: str
    param: Optional[str] = None
    code: Optional[str] = None


def _plain(value: Any) -> Any:
    """A numpy or torch scalar as the Python number it holds (msgpack packs only Python's own types)."""
    item = getattr(value, "item", None)
    if item is None:
        raise TypeError(f"cannot send a {type(value).__name__} to the other process")
    return item()


def pack(msg: dict[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True, default=_plain)


def unpack(data: bytes) -> dict[str, Any]:
    msg = msgpack.unpackb(data, raw=False, strict_map_key=True)
    if not isinstance(msg, dict) or "t" not in msg:
        raise ValueError("malformed message: expected a map with a 't' key")
    return msg


def add_msg(rid: str, token_ids: list[int], params: SamplingParams) -> dict[str, Any]:
    p = {name: getattr(params, name) for name in _PARAM_FIELDS}
    if params.logit_bias is not None:  # maps are unpacked with string keys only: token ids go as pairs
        p["logit_bias"] = [[t, b] for t, b in params.logit_bias.items()]
    return {"t": ADD, "rid": rid, "ids": list(token_ids), "p": p}


def params_from_wire(d: dict[str, Any]) -> SamplingParams:
    fields = {k: v for k, v in d.items() if k in _PARAM_FIELDS}
    if isinstance(fields.get("logit_bias"), list):
        pairs = fields["logit_bias"]
        if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
            raise ValueError("logit_bias: each entry on the wire must be a [token id, bias] pair")
        fields["logit_bias"] = dict(pairs)
    return SamplingParams(**fields)


def output_to_row(o: StepOutput) -> tuple:
    """`o` in `StepOutput`'s field order (one per running request per step, on the engine's step path: fields
    go as they are, a scalar that is not Python's own is converted by `pack`)."""
    lps = o.new_logprobs
    if lps is not None:
        lps = [[lp.token_id, float(lp.logprob), [[int(t), float(v)] for t, v in lp.top]] for lp in lps]
    plps = o.prompt_logprobs
    if plps is not None:  # entry 0 is None; the others carry their rank
        plps = [None if lp is None else [lp.token_id, float(lp.logprob), [[int(t), float(v)] for t, v in lp.top],
                                         lp.rank] for lp in plps]
    return (o.request_id, o.new_token_ids, o.new_text, lps, o.finished, o.finish_reason, o.num_prompt_tokens,
            o.num_cached_tokens, o.num_output_tokens, o.error, o.stop_reason, plps)


def row_to_output(row: list) -> StepOutput:
    out = StepOutput(*row)
    if out.new_logprobs is not None:
        out.new_logprobs = [TokenLogprob(t, v, [(a, b) for a, b in top]) for t, v, top in out.new_logprobs]
    if out.prompt_logprobs is not None:
        out.prompt_logprobs = [None if lp is None else TokenLogprob(lp[0], lp[1], [(a, b) for a, b in lp[2]], lp[3])
                               for lp in out.prompt_logprobs]
    return out
