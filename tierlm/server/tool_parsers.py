"""`ToolCallParser`: the function calls a model wrote into its answer, taken out as OpenAI `tool_calls`
(`--tool-call-parser`), for chat requests that send `tools`.

Each model family writes calls its own way:
- `hermes` (Qwen2.5, Qwen3, Hermes; SGLang calls it `qwen25`): `<tool_call>{"name": ..., "arguments": {...}}
  </tool_call>` blocks, one per call, after any plain text.
- `llama3_json` (Llama 3.1 and later; SGLang's `llama3`): the whole answer is one or more JSON objects
  `{"name": ..., "parameters": {...}}` separated by `;` (after `<|python_tag|>`, a special token the text
  usually no longer holds).

What is not a well-formed call stays text: a block whose JSON does not parse, or that names no function,
is returned as `content` with everything after it, never dropped. A streamed answer is split as it arrives
(`ToolStream`): plain text goes out at once except what could begin a call, and each call goes out whole once
its block closes; the pieces of a stream join into exactly what `parse` gives for the whole text.
"""
from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional

from tierlm.server.reasoning import held_back


@dataclass(frozen=True)
class ToolCall:
    """One function call: its name and its arguments as a JSON text (OpenAI's `function.arguments`)."""

    name: str
    arguments: str

    def to_openai(self, index: Optional[int] = None) -> dict[str, Any]:
        """OpenAI's `tool_calls` entry (with `index` in a stream's delta), under a fresh call id."""
        call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}
        return call if index is None else {"index": index, **call}


def call_of(obj: Any, args_key: str) -> Optional[ToolCall]:
    """The call a decoded JSON value describes (`{"name": str, args_key: object or JSON text}`), else None."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get(args_key, obj.get("arguments", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(obj["name"], json.dumps(args, ensure_ascii=False))


class ToolStream(ABC):
    """One choice's answer fed delta by delta: `feed` returns the text and the whole calls it can release now
    (with `final` everything left)."""

    @abstractmethod
    def feed(self, delta: str, final: bool) -> tuple[str, list[ToolCall]]:
        """(content, calls) released by this delta."""


class ToolCallParser(ABC):
    """How one model family writes function calls."""

    name: str

    @abstractmethod
    def stream(self) -> ToolStream:
        """A fresh stream state for one choice."""

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        """(content, calls) of a whole answer."""
        return self.stream().feed(text, True)


class _HermesStream(ToolStream):
    START, END = "<tool_call>", "</tool_call>"

    def __init__(self) -> None:
        self.state = "text"  # text -> call -> between (after a call: whitespace dropped) -> call ... | raw
        self.buf = ""
        self.searched = 0  # characters of an open block searched for its end

    def feed(self, delta: str, final: bool) -> tuple[str, list[ToolCall]]:
        self.buf += delta
        out, calls = "", []
        while self.buf:
            if self.state == "raw":  # after a block that is not a call: all text
                out, self.buf = out + self.buf, ""
            elif self.state in ("text", "between"):
                if self.state == "between":
                    self.buf = self.buf.lstrip()
                    if not self.buf:
                        break
                at = self.buf.find(self.START)
                if at < 0:
                    keep = 0 if final else held_back(self.buf, self.START)
                    out, self.buf = out + self.buf[:len(self.buf) - keep], self.buf[len(self.buf) - keep:]
                    self.state = "text"
                    break
                out, self.buf, self.state = out + self.buf[:at], self.buf[at:], "call"
            else:  # inside a block: search only the text not searched yet (a long block stays linear)
                end = self.buf.find(self.END, max(len(self.START), self.searched - len(self.END)))
                if end < 0 and not final:
                    self.searched = len(self.buf)
                    break
                self.searched = 0
                block = self.buf[len(self.START):end if end >= 0 else len(self.buf)]
                try:
                    call = call_of(json.loads(block), "arguments")
                except ValueError:
                    call = None
                if call is None:
                    self.state = "raw"
                    continue
                calls.append(call)
                self.buf = self.buf[end + len(self.END):] if end >= 0 else ""
                self.state = "between"
        return out, calls


class HermesParser(ToolCallParser):
    """`<tool_call>` JSON blocks (Qwen2.5, Qwen3, Hermes)."""

    name = "hermes"

    def stream(self) -> ToolStream:
        return _HermesStream()


class _Llama3Stream(ToolStream):
    """An answer that begins with `{` (or `<|python_tag|>`) is held whole and parsed at the end; any other
    answer is plain text from its first character on."""

    TAG = "<|python_tag|>"

    def __init__(self) -> None:
        self.mode = "start"  # start -> text | calls
        self.buf = ""

    def feed(self, delta: str, final: bool) -> tuple[str, list[ToolCall]]:
        self.buf += delta
        if self.mode == "start":
            head = self.buf.lstrip()
            if head.startswith(("{", self.TAG)):
                self.mode = "calls"
            elif head and not self.TAG.startswith(head):
                self.mode = "text"
            elif not final:
                return "", []
        if self.mode == "calls":
            if not final:
                return "", []
            text, self.buf = self.buf, ""
            calls = self._calls(text)
            return ("", calls) if calls is not None else (text, [])
        text, self.buf = self.buf, ""
        return text, []

    def _calls(self, text: str) -> Optional[list[ToolCall]]:
        rest = text.strip()
        rest = rest[len(self.TAG):] if rest.startswith(self.TAG) else rest
        decoder, calls = json.JSONDecoder(), []
        while rest:
            try:
                obj, end = decoder.raw_decode(rest)
            except ValueError:
                return None
            call = call_of(obj, "parameters")
            if call is None:
                return None
            calls.append(call)
            rest = rest[end:].lstrip()
            if rest.startswith(";"):
                rest = rest[1:].lstrip()
            elif rest:
                return None
        return calls or None


class Llama3JsonParser(ToolCallParser):
    """JSON calls as the whole answer (Llama 3.1 and later)."""

    name = "llama3_json"

    def stream(self) -> ToolStream:
        return _Llama3Stream()


class _ForcedStream(ToolStream):
    def __init__(self, function: Optional[str]) -> None:
        self.function = function
        self.buf = ""

    def feed(self, delta: str, final: bool) -> tuple[str, list[ToolCall]]:
        self.buf += delta
        if not final:
            return "", []
        text, self.buf = self.buf, ""
        try:
            doc = json.loads(text)
        except ValueError:  # cut short by max_tokens
            return text, []
        if self.function is not None:
            call = call_of({"name": self.function, "arguments": doc}, "arguments")
            return ("", [call]) if call is not None else (text, [])
        calls = [call_of(item, "parameters") for item in doc] if isinstance(doc, list) and doc else [None]
        return (text, []) if None in calls else ("", calls)  # type: ignore[return-value]


class ForcedToolCalls(ToolCallParser):
    """The answer of a request whose `tool_choice` forces calls, written as JSON under `forced_schema` (whatever the
    model's own format): the named function's arguments, or for 'required' a list of `{name, parameters}`. The
    calls go out whole at the end; an answer cut short (max_tokens) stays text."""

    name = "forced"

    def __init__(self, function: Optional[str]) -> None:
        self.function = function

    def stream(self) -> ToolStream:
        return _ForcedStream(self.function)


def forced_schema(tools: list[dict[str, Any]], function: Optional[str], parallel: bool = True) -> str:
    """The JSON schema (as text) that makes a model write forced calls: the named `function`'s parameters, or (None:
    'required') a non-empty list of calls to any of `tools` (one call without `parallel`)."""
    params = {t["function"]["name"]: t["function"].get("parameters") or {"type": "object"} for t in tools}
    if function is not None:
        return json.dumps(params[function])
    items = {"anyOf": [{"type": "object", "properties": {"name": {"enum": [name]}, "parameters": schema},
                        "required": ["name", "parameters"], "additionalProperties": False}
                       for name, schema in params.items()]}
    return json.dumps({"type": "array", "items": items, "minItems": 1, **({} if parallel else {"maxItems": 1})})


# --tool-call-parser: vLLM's names, and SGLang's for the same formats
PARSERS: dict[str, type[ToolCallParser]] = {"hermes": HermesParser, "qwen25": HermesParser, "qwen": HermesParser,
                                            "llama3_json": Llama3JsonParser, "llama3": Llama3JsonParser}


def tool_call_parser(name: str) -> ToolCallParser:
    """The parser named by `--tool-call-parser`."""
    return PARSERS[name]()
