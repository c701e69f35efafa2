"""Pydantic schemas of OpenAI function calling: the `tools` a chat request offers, its `tool_choice`, the calls
an assistant message made earlier in the conversation, and the calls a response returns."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"  # OpenAI's rule for a function's name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class FunctionDefinition(_Strict):
    """A function the model may call: its name, what it does, and its arguments' JSON Schema."""

    name: str = Field(pattern=NAME_PATTERN)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(_Strict):
    """One entry of a chat request's `tools`."""

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Strict):
    """The function a named `tool_choice` forces."""

    name: str = Field(pattern=NAME_PATTERN)


class NamedToolChoice(_Strict):
    """`tool_choice: {"type": "function", "function": {"name": ...}}`."""

    type: Literal["function"]
    function: FunctionName


class FunctionCall(_Strict):
    """A call as OpenAI writes it: the name and the arguments as a JSON text."""

    name: str = Field(min_length=1, max_length=256)
    arguments: str


class ToolCallIn(_Strict):
    """A call an earlier assistant message made (sent back with the conversation)."""

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionCallOut(BaseModel):
    """The function and arguments (a JSON text) of a returned call."""

    name: str
    arguments: str


class ToolCallOut(BaseModel):
    """One call of a response's `message.tool_calls`."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut
