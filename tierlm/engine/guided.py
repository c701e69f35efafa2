"""`GuidedDecoding`: structured outputs (OpenAI's `response_format` with a JSON schema, or any JSON object; SGLang's
`json_schema` and `regex`; vLLM's `guided_choice`): each pass masks a guided request's logits to the tokens its
grammar allows next, and the engine feeds every token it appends to the request's matcher; a request whose grammar
is complete ends ("stop").

Grammars come from xgrammar, compiled against the served tokenizer and the model's vocabulary (the compiler is built
at start-up on a compile thread and keeps its compiled grammars). A request's schema or regex is turned into a grammar
when it arrives (what cannot be followed is refused at once), and compiled on a worker thread: a large schema never
stalls the steps of the requests already running; the request joins the queue once its grammar is ready. The mask
needs the request's last token: under overlap scheduling a pass holding a guided request whose token is still in
flight runs its forward on the device while the host reads that token back, and is sampled after it
(`Engine._launch`), so a guided request decodes every step.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Callable, Collection, Optional, Sequence

import torch

from tierlm.engine.errors import RequestError
from tierlm.engine.mask_fill import MaskFill
from tierlm.utils.upload import upload

if TYPE_CHECKING:
    from tierlm.engine.request import Req


class GuidedDecoding:
    """The engine's guided requests' grammar matchers (by request id), the compiler that makes them, and the requests
    whose grammars are being compiled."""

    COMPILE_THREADS = 2  # a large schema's compile does not hold back a small one behind it
    MAX_FILL_THREADS = 8

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Collection[int], device: torch.device,
                 fill_threads: Optional[int] = None) -> None:
        """`fill_threads`: threads that may fill a pass's masks side by side (`MaskFill`; one per CPU this process
        may run on, at most `MAX_FILL_THREADS`, by default; 0 fills them one by one on the calling thread)."""
        if fill_threads is None:
            fill_threads = min(self.MAX_FILL_THREADS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                               else os.cpu_count() or 1)
        self.fill = MaskFill(fill_threads)
        self._tokenizer = tokenizer
        self._pinned = torch.device(device).type == "cuda"  # the masks' upload must not wait for the stream
        self._vocab = vocab_size
        self._eos = sorted(eos_ids)
        self._compiler: Any = None
        self._compiler_lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._compiling: dict[str, tuple["Req", Future]] = {}  # arrival order
        self._matchers: dict[str, Any] = {}
        if tokenizer is not None:
            # xgrammar's import and the vocabulary's scan (a served vocabulary's takes a while, holding the
            # interpreter) at start-up, in the background: not in the steps beside the first guided request
            import xgrammar  # noqa: F401

            self._pool = ThreadPoolExecutor(self.COMPILE_THREADS, thread_name_prefix="grammar")
            self._pool.submit(self._compiler_for_vocab)

    def _grammar(self, params: Any) -> Any:
        """The request's schema or regex as an xgrammar `Grammar` (quick; `RequestError` for one it cannot follow)."""
        import xgrammar as xgr

        try:
            if params.regex is not None:
                return xgr.Grammar.from_regex(params.regex)
            if params.ebnf is not None:
                return xgr.Grammar.from_ebnf(params.ebnf)
            return xgr.Grammar.from_json_schema(params.json_schema, any_whitespace=False)
        except RuntimeError as e:  # xgrammar's message ends with what it could not take
            reason = str(e).strip().splitlines()[-1].split(": ", 1)[-1] if str(e).strip() else type(e).__name__
            param = _grammar_param(params)
            what = {"regex": "a regular expression", "ebnf": "an EBNF grammar", "json_schema": "a JSON schema"}[param]
            raise RequestError(f"{param}: not {what} this engine can follow ({reason})", param) from None

    def _compiler_for_vocab(self) -> Any:
        """On a compile thread: the compiler for the served vocabulary, built once (a failed build is tried again,
        and its error ends the request that asked)."""
        import xgrammar as xgr

        with self._compiler_lock:
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self._vocab,
                                                          stop_token_ids=self._eos)
                self._compiler = xgr.GrammarCompiler(info)
            return self._compiler

    def _compile(self, grammar: Any) -> Any:
        """On a compile thread: the grammar's token masks against the vocabulary (cached by the compiler)."""
        return self._compiler_for_vocab().compile_grammar(grammar)

    def expect(self, req: "Req") -> bool:
        """A new request: False while its grammar compiles (it is marked guided; `compiled` hands it back when it
        may be queued), True when it can be queued now (it is not guided). `RequestError` for a schema or regex
        that cannot be followed."""
        p = req.params
        if p.json_schema is None and p.regex is None and p.ebnf is None:
            return True
        param = _grammar_param(p)
        if self._tokenizer is None:
            raise RequestError(f"{param} needs the model's tokenizer (the engine runs without one)", param)
        grammar = self._grammar(p)
        assert self._pool is not None  # made with the tokenizer
        self._compiling[req.request_id] = (req, self._pool.submit(self._compile, grammar))
        req.guided = True
        return False

    @property
    def num_compiling(self) -> int:
        """Requests whose grammars are being compiled (accepted, not yet queued)."""
        return len(self._compiling)

    def compiling(self, request_id: str) -> Optional["Req"]:
        """The request of this id if its grammar is being compiled, else None."""
        held = self._compiling.get(request_id)
        return held[0] if held is not None else None

    def compiled(self, timeout: float = 0.0) -> list[tuple["Req", Optional[str]]]:
        """The requests whose grammars are ready, in arrival order, each with None (queue it now: its matcher is
        made) or why its grammar failed. Waits up to `timeout` seconds for the first (an engine with nothing else
        to do)."""
        if not self._compiling:
            return []
        if timeout > 0:
            wait([f for _, f in self._compiling.values()], timeout, FIRST_COMPLETED)
        import xgrammar as xgr

        ready: list[tuple["Req", Optional[str]]] = []
        for rid, (req, future) in list(self._compiling.items()):
            if not future.done():
                continue
            del self._compiling[rid]
            try:
                self._matchers[rid] = xgr.GrammarMatcher(future.result())
                ready.append((req, None))
            except Exception as e:  # noqa: BLE001 - anything the compiler raised ends this request, not the engine
                ready.append((req, f"the request's grammar did not compile ({type(e).__name__}: {e})"))
        return ready

    def masker(self, reqs: Sequence["Req"]) -> Optional[Callable[[torch.Tensor], None]]:
        """For a pass sampling one token per request: what masks its float32 logits in place (the guided rows to
        their grammars' next tokens), or None when no request of it is guided."""
        if not self._matchers:
            return None
        # a request whose grammar ended as the tokens in flight were read is still in the pass: its row goes unmasked
        # (its token is dropped)
        rows = [i for i, r in enumerate(reqs) if r.guided and r.request_id in self._matchers]
        if not rows:
            return None
        import xgrammar as xgr

        # from pinned memory (`utils.upload`'s reason); a fresh block each pass, held until its copy has read it
        bitmask = torch.full(xgr.get_bitmask_shape(len(rows), self._vocab), -1, dtype=xgr.bitmask_dtype,
                             pin_memory=self._pinned)
        self.fill([self._matchers[reqs[i].request_id] for i in rows], bitmask)

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
        """`req` finished or was aborted: drop its matcher, or its compile if that has not begun."""
        self._matchers.pop(req.request_id, None)
        held = self._compiling.pop(req.request_id, None)
        if held is not None:
            held[1].cancel()

    def close(self) -> None:
        """Stop the compile threads (a compile under way is left to end on its own)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _grammar_param(params: Any) -> str:
    """Which of a guided request's fields holds its grammar."""
    return "regex" if params.regex is not None else "ebnf" if params.ebnf is not None else "json_schema"
