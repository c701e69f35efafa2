"""`ChoiceOutput`: one chat choice's generated text as OpenAI returns it: the reasoning (`--reasoning-parser`), the
answer's text, and the function calls taken out of it (`--tool-call-parser`), from a whole text or delta by delta.
A stream's pieces join into what the whole text gives."""
from __future__ import annotations

from typing import Any, Optional

from tierlm.server.reasoning import ChatSplit, ReasoningParser
from tierlm.server.tool_parsers import ToolCall, ToolCallParser


class ChoiceOutput:
    """Splits one choice's text: reasoning first, then calls out of the answer. `parallel` False keeps only the
    first call (OpenAI's `parallel_tool_calls: false`)."""

    def __init__(self, reasoning: Optional[ReasoningParser], live_reasoning: bool,
                 tools: Optional[ToolCallParser], parallel: bool = True) -> None:
        self.reasoning = ChatSplit(reasoning, live_reasoning) if reasoning is not None else None
        self.tools = tools.stream() if tools is not None else None
        self.parallel = parallel
        self.num_calls = 0

    def feed(self, text: str, final: bool) -> tuple[str, str, list[ToolCall]]:
        """(reasoning, content, calls) released by `text`; `final` releases everything held."""
        reasoning, answer = self.reasoning.feed(text, final) if self.reasoning is not None else ("", text)
        if self.tools is None:
            return reasoning, answer, []
        content, calls = self.tools.feed(answer, final)
        if not self.parallel:
            calls = calls[:max(0, 1 - self.num_calls)]
        self.num_calls += len(calls)
        return reasoning, content, calls

    def finish_reason(self, reason: Optional[str]) -> Optional[str]:
        """OpenAI's `tool_calls` for an answer that stopped after calling functions."""
        return "tool_calls" if self.num_calls and reason == "stop" else reason

    def message(self, text: str, finish_reason: Optional[str]) -> tuple[dict[str, Any], Optional[str]]:
        """The whole text's assistant message and finish reason."""
        reasoning, content, calls = self.feed(text, True)
        message = {"role": "assistant", "content": content if content or not calls else None,
                   "reasoning_content": reasoning or None, "tool_calls": [c.to_openai() for c in calls]}
        return message, self.finish_reason(finish_reason)
