"""`ReasoningParser`: a thinking model's reasoning split from its answer (`--reasoning-parser`), returned as a chat
message's `reasoning_content` beside its `content` (the field SGLang and vLLM use).

Qwen3 and DeepSeek-R1 write their reasoning between `<think>` and `</think>` (tags decoded as text: they are not
special tokens), then the answer:
- `qwen3`: reasoning only where the text begins with `<think>` (leading whitespace aside); with thinking off
  (`chat_template_kwargs: {"enable_thinking": false}`, whose template closes an empty thought in the prompt) the
  whole text is the answer.
- `deepseek-r1`: the text before `</think>` is reasoning whether or not `<think>` begins it (its template writes
  `<think>` into the prompt); without a `</think>` all of it is.
The whitespace between `</think>` and the answer is dropped. Streamed text is split as it arrives
(`ReasoningStream`); a tag cut between two deltas is held back until it is whole, so the pieces of a stream join
into exactly what `split` gives for the whole text.
"""
from __future__ import annotations

from dataclasses import dataclass

START, END = "<think>", "</think>"


def held_back(text: str, tag: str) -> int:
    """Characters at the end of `text` that begin `tag` (what a stream must hold until the next delta; the tool-call
    parsers' too)."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class ReasoningStream:
    """One choice's text, fed delta by delta: `feed` returns the (reasoning, answer) text it can release now,
    `finish` what is left at the end."""

    def __init__(self, forced: bool) -> None:
        self.state = "start"  # start -> reasoning -> gap (whitespace after </think>) -> answer
        self.forced = forced
        self.buf = ""

    def feed(self, delta: str) -> tuple[str, str]:
        self.buf += delta
        reasoning = answer = ""
        while self.buf:
            if self.state == "start":
                head = self.buf.lstrip()
                if head.startswith(START):
                    self.buf, self.state = head[len(START):], "reasoning"
                elif not head or START.startswith(head):
                    break  # whitespace, or the beginning of <think>: wait
                else:
                    self.state = "reasoning" if self.forced else "answer"
            elif self.state == "reasoning":
                at = self.buf.find(END)
                if at >= 0:
                    reasoning += self.buf[:at]
                    self.buf, self.state = self.buf[at + len(END):], "gap"
                    continue
                keep = held_back(self.buf, END)
                reasoning += self.buf[:len(self.buf) - keep]
                self.buf = self.buf[len(self.buf) - keep:]
                break
            elif self.state == "gap":
                self.buf = self.buf.lstrip()
                if self.buf:
                    self.state = "answer"
            else:
                answer, self.buf = answer + self.buf, ""
        return reasoning, answer

    def finish(self) -> tuple[str, str]:
        """The text held back at the end: an unfinished tag is text like any other."""
        rest, self.buf = self.buf, ""
        if self.state == "reasoning" or (self.state == "start" and self.forced):
            return rest, ""
        return "", rest if self.state != "gap" else ""

    @property
    def reasoning_done(self) -> bool:
        """Whether the reasoning part is over (what follows is the answer)."""
        return self.state in ("gap", "answer")


@dataclass(frozen=True)
class ReasoningParser:
    """How one model family marks its reasoning (`forced`: every answer begins with reasoning)."""

    name: str
    forced: bool

    def stream(self) -> ReasoningStream:
        return ReasoningStream(self.forced)

    def split(self, text: str) -> tuple[str, str]:
        """(reasoning, answer) of a whole text."""
        s = self.stream()
        r1, a1 = s.feed(text)
        r2, a2 = s.finish()
        return r1 + r2, a1 + a2


PARSERS = {"qwen3": ReasoningParser("qwen3", forced=False), "deepseek-r1": ReasoningParser("deepseek-r1", True)}


def reasoning_parser(name: str) -> ReasoningParser:
    """The parser named by `--reasoning-parser` (vLLM's spelling `deepseek_r1` too)."""
    return PARSERS[name.replace("_", "-")]


class ChatSplit:
    """One streamed chat choice's deltas as (reasoning, answer) pieces; with `live` False (a request's
    `stream_reasoning: false`) the reasoning is held and released in one piece once it is over."""

    def __init__(self, parser: ReasoningParser, live: bool) -> None:
        self.stream = parser.stream()
        self.live = live
        self.held = ""

    def feed(self, text: str, final: bool) -> tuple[str, str]:
        reasoning, answer = self.stream.feed(text)
        if final:
            r, a = self.stream.finish()
            reasoning, answer = reasoning + r, answer + a
        if not self.live:
            self.held += reasoning
            reasoning = ""
            if self.held and (final or self.stream.reasoning_done):
                reasoning, self.held = self.held, ""
        return reasoning, answer
