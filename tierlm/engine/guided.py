"""`GuidedDecoding`: structured outputs (OpenAI's `response_format` with a JSON schema, or any JSON object; SGLang's
`json_schema` and `regex`; vLLM's `guided_choice`): each pass masks a guided request's logits to the tokens its
grammar allows next, and the engine feeds every token it appends to the request's matcher; a request whose grammar
is complete ends ("stop").

Grammars come from xgrammar, compiled against the served tokenizer and the model's vocabulary (the compiler is built
on the first guided request and keeps its compiled schemas). The mask needs the request's last token, so a guided
request never has two passes in flight: under overlap scheduling it sits out every other decode step (the
scheduler leaves it out while its token is in flight), and no other request waits for it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Collection, Optional, Sequence

import torch

from tierlm.engine.errors import RequestError
from tierlm.utils.upload import upload

if TYPE_CHECKING:
    from tierlm.engine.request import Req


class GuidedDecoding:
    """The engine's guided requests' grammar matchers (by request id), and the compiler that makes them."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Collection[int], device: torch.device) -> None:
        self._tokenizer = tokenizer
        self._pinned = torch.device(device).type == "cuda"  # the masks' upload must not wait for the stream
        self._vocab = vocab_size
        self._eos = sorted(eos_ids)
        self._compiler: Any = None
        self._matchers: dict[str, Any] = {}

    def _compile(self, params: Any) -> Any:
        import xgrammar as xgr

        if self._compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self._vocab,
                                                      stop_token_ids=self._eos)
            self._compiler = xgr.GrammarCompiler(info)
        try:
            if params.regex is not None:
                return self._compiler.compile_regex(params.regex)
            return self._compiler.compile_json_schema(params.json_schema, any_whitespace=False)
        except RuntimeError as e:  # xgrammar's message ends with what it could not take
            reason = str(e).strip().splitlines()[-1].split(": ", 1)[-1] if str(e).strip() else type(e).__name__
            what, param = ("a regular expression", "regex") if params.regex is not None else \
                ("a JSON schema", "json_schema")
            raise RequestError(f"{param}: not {what} this engine can follow ({reason})", param) from None

    def expect(self, req: "Req") -> None:
        """Compile a new request's grammar (`RequestError` for a schema that cannot be followed) and mark it guided."""
        p = req.params
        if p.json_schema is None and p.regex is None:
            return
        param = "regex" if p.regex is not None else "json_schema"
        if self._tokenizer is None:
            raise RequestError(f"{param} needs the model's tokenizer (the engine runs without one)", param)
        import xgrammar as xgr

        self._matchers[req.request_id] = xgr.GrammarMatcher(self._compile(p))
        req.guided = True

    def masker(self, reqs: Sequence["Req"]) -> Optional[Callable[[torch.Tensor], None]]:
        """For a pass sampling one token per request: what masks its float32 logits in place (the guided rows to
        their grammars' next tokens), or None when no request of it is guided."""
        if not self._matchers:
            return None
        rows = [i for i, r in enumerate(reqs) if r.guided]
        if not rows:
            return None
        import xgrammar as xgr

        # from pinned memory (`utils.upload`'s reason); a fresh block each pass, held until its copy has read it
        bitmask = torch.full(xgr.get_bitmask_shape(len(rows), self._vocab), -1, dtype=xgr.bitmask_dtype,
                             pin_memory=self._pinned)
        for j, i in enumerate(rows):
            self._matchers[reqs[i].request_id].fill_next_token_bitmask(bitmask, j)

        def apply(logits: torch.Tensor) -> None:
            index = upload(rows, torch.int64, logits.device)
            sub = logits[index]
            xgr.apply_token_bitmask_inplace(sub, bitmask.to(logits.device, non_blocking=True))
            logits[index] = sub
        return apply

    def accept(self, req: "Req", token: int) -> Optional[str]:
        """Feed a token `req` appended: None while its grammar goes on, "complete" once it is, "rejected" for a
        token the grammar does not allow (never sampled under the mask)."""
        matcher = self._matchers.get(req.request_id)
        if matcher is None:
            return None
        if not matcher.accept_token(token):
            return "rejected"
        return "complete" if matcher.is_terminated() else None

    def done(self, req: "Req") -> None:
        """`req` finished or was aborted: drop its matcher."""
        self._matchers.pop(req.request_id, None)
