"""A chat request's messages (and tools) through the model's chat template, checked field by field.

Shared by /v1/chat/completions and /tokenize, so both render a conversation to the same text. Every refusal
is an `APIError` naming the offending field, raised before the template runs.
"""
from __future__ import annotations

import json
from typing import Any, Optional

from tierlm.server.errors import APIError
from tierlm.server.prompt_encoder import PromptEncoder
from tierlm.server.structured import asks_grammar, json_text
from tierlm.server.tool_parsers import ForcedToolCalls, ToolCallParser, forced_schema
from tierlm.validation import check_text

# apply_chat_template's own arguments and the variables the server passes: a request's template kwargs may not
# override them (the conversation, tokenizing, the template itself)
RESERVED_TEMPLATE_ARGS = frozenset({
    "conversation", "messages", "tools", "documents", "chat_template", "add_generation_prompt",
    "continue_final_message", "tokenize", "padding", "truncation", "max_length", "return_tensors", "return_dict",
    "return_assistant_tokens_mask", "tokenizer_kwargs", "kwargs"})


def _tool_calls(m: Any, i: int) -> list[dict[str, Any]]:
    """An assistant message's earlier calls as templates take them: arguments as an object, not a JSON text
    (templates write them with `tojson`)."""
    if m.role != "assistant":
        raise APIError(400, f"messages.{i}.tool_calls: only an assistant message carries tool calls",
                       f"messages.{i}.tool_calls")
    calls = []
    for j, call in enumerate(m.tool_calls):
        param = f"messages.{i}.tool_calls.{j}.function.arguments"
        check_text(call.function.arguments, param)
        check_text(call.function.name, f"messages.{i}.tool_calls.{j}.function.name")
        try:
            args = json.loads(call.function.arguments)
        except ValueError:
            args = None
        if not isinstance(args, dict):
            raise APIError(400, f"{param}: must be a JSON object written as text", param)
        calls.append({"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": args}})
    return calls


def _messages(req: Any, encoder: PromptEncoder) -> list[dict[str, Any]]:
    messages, chars = [], 0
    for i, m in enumerate(req.messages):
        content = m.content
        if content is None:
            if m.role != "assistant":
                raise APIError(400, f"messages.{i}.content is required for role '{m.role}'", f"messages.{i}.content")
            content = ""
        elif not isinstance(content, str):
            content = "".join(part.text for part in content)
        chars += len(content)
        encoder.check_length(chars, "messages")
        check_text(content, f"messages.{i}.content")
        msg: dict[str, Any] = {"role": m.role, "content": content}
        if m.name:
            check_text(m.name, f"messages.{i}.name")
            msg["name"] = m.name
        if m.tool_calls:
            msg["tool_calls"] = _tool_calls(m, i)
            chars += sum(len(c.function.arguments) for c in m.tool_calls)
            encoder.check_length(chars, "messages")
        if m.tool_call_id is not None:
            if m.role != "tool":
                raise APIError(400, f"messages.{i}.tool_call_id: only a tool message answers a call",
                               f"messages.{i}.tool_call_id")
            check_text(m.tool_call_id, f"messages.{i}.tool_call_id")
            msg["tool_call_id"] = m.tool_call_id
        messages.append(msg)
    return messages


def _tools(req: Any, encoder: PromptEncoder) -> Optional[list[dict[str, Any]]]:
    """The request's tools for the template; 400 when the template would silently leave them out."""
    if not getattr(req, "tools", None):
        return None
    tools = [t.model_dump(exclude_none=True) for t in req.tools]
    text = json_text(tools, "tools")
    encoder.check_length(len(text), "tools")
    check_text(text, "tools")
    template = encoder.tokenizer.chat_template
    sources = template.values() if isinstance(template, dict) else [template]
    if not any("tools" in (s or "") for s in sources):
        raise APIError(400, "this model's chat template does not render tools, so the model would never see them",
                       "tools", "unsupported")
    return tools


def _template_kwargs(kwargs: Optional[dict[str, Any]]) -> dict[str, Any]:
    """`chat_template_kwargs`: variables for the template, never the arguments the server sets itself."""
    json_text(kwargs, "chat_template_kwargs")
    for key in kwargs or {}:
        if not key.isidentifier() or key in RESERVED_TEMPLATE_ARGS:
            raise APIError(400, f"chat_template_kwargs: {key!r} cannot be set (a template variable name, not one "
                                f"of {', '.join(sorted(RESERVED_TEMPLATE_ARGS))})", f"chat_template_kwargs.{key}")
    return dict(kwargs or {})


async def chat_text(req: Any, encoder: PromptEncoder) -> str:
    """`req.messages` (a chat completion's or /tokenize's) rendered through the model's chat template, with the
    request's `tools` and `chat_template_kwargs`; with `continue_final_message` the text ends inside the last
    (assistant) message, for the model to continue it (vLLM's)."""
    if not getattr(encoder.tokenizer, "chat_template", None):
        raise APIError(400, "this model has no chat template; use /v1/completions", "messages", "no_chat_template")
    messages = _messages(req, encoder)
    tools = _tools(req, encoder)
    kwargs = _template_kwargs(req.chat_template_kwargs)
    generation_prompt, continued = req.add_generation_prompt is not False, bool(req.continue_final_message)
    if continued and generation_prompt:  # as vLLM: the two ask for opposite ends of the rendered text
        raise APIError(400, "continue_final_message needs add_generation_prompt: false", "continue_final_message")
    if continued and messages[-1]["role"] != "assistant":
        raise APIError(400, "continue_final_message continues the last message, which must be the assistant's",
                       "continue_final_message")
    try:
        return await encoder.render_chat(messages, generation_prompt, kwargs, continue_final_message=continued,
                                         tools=tools)
    except Exception as e:  # noqa: BLE001  (templates raise their own errors for unsupported conversations)
        raise APIError(400, f"messages could not be rendered with the chat template: {e}", "messages") from None


async def chat_prompt(req: Any, encoder: PromptEncoder) -> tuple[list[int], str]:
    """Render the messages through the model's chat template; (token ids, rendered text)."""
    text = await chat_text(req, encoder)
    return await encoder.encode(text, "messages", add_special_tokens=False), text


def tool_parser_for(req: Any, parser: Optional[ToolCallParser]) -> tuple[Optional[ToolCallParser], Optional[str]]:
    """The parser that takes calls out of this chat request's answers (None: the answer is all text) and, where
    `tool_choice` forces calls ('required' or a named function, as vLLM: without --tool-call-parser), the JSON
    schema the answer is held to; after checking `tool_choice` against the request's tools and the server's
    `--tool-call-parser`."""
    choice = req.tool_choice if req.tool_choice is not None else ("auto" if req.tools else "none")
    if choice == "none":
        return None, None
    if not req.tools:
        raise APIError(400, "tool_choice needs tools", "tool_choice")
    if choice != "auto":
        function = None if choice == "required" else choice.function.name
        if function is not None and function not in {t.function.name for t in req.tools}:
            raise APIError(400, f"tool_choice names {function!r}, which is not among the tools",
                           "tool_choice.function.name")
        if asks_grammar(req):
            raise APIError(400, "a forced tool_choice and a response_format (or regex, ebnf, guided_* or "
                                "structured_outputs) cannot both hold the answer", "tool_choice")
        tools = [t.model_dump(exclude_none=True) for t in req.tools]
        return ForcedToolCalls(function), forced_schema(tools, function, req.parallel_tool_calls is not False)
    if parser is None:
        raise APIError(400, "tools with tool_choice 'auto' (the default when tools are given) need the server to run "
                            "with --tool-call-parser (hermes for Qwen, llama3_json for Llama); tool_choice 'none' "
                            "renders the tools without taking calls out of the answer", "tool_choice")
    return parser, None
