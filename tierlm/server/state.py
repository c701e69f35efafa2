"""`ServerState`: everything a request handler needs, stored on `app.state.tierlm` by the app factory."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

from starlette.requests import Request

from tierlm.config import EngineConfig
from tierlm.server.engine_client import EngineClient
from tierlm.server.metrics import ServerMetrics
from tierlm.server.prompt_encoder import PromptEncoder
from tierlm.server.reasoning import ReasoningParser, reasoning_parser
from tierlm.server.requests import ServingInfo
from tierlm.server.token_bytes import TokenBytes
from tierlm.server.tool_parsers import ToolCallParser, tool_call_parser


@dataclass
class ServerState:
    """The engine link, tokenizer (and its off-loop encoder), model facts and metrics of one running server."""

    client: EngineClient
    tokenizer: Any
    encoder: Optional[PromptEncoder]
    info: ServingInfo
    config: EngineConfig
    metrics: ServerMetrics
    engine_info: dict[str, Any] = field(default_factory=dict)  # the engine's READY facts (model dir, dtype..)
    created: int = field(default_factory=lambda: int(time.time()))
    ready: bool = False
    token_bytes: Optional[TokenBytes] = field(init=False)  # chat logprobs' `bytes`; None without a tokenizer
    reasoning: Optional[ReasoningParser] = field(init=False)  # --reasoning-parser
    tools: Optional[ToolCallParser] = field(init=False)  # --tool-call-parser

    def __post_init__(self) -> None:
        self.token_bytes = TokenBytes(self.tokenizer) if self.tokenizer is not None else None
        self.reasoning = reasoning_parser(self.config.reasoning_parser) if self.config.reasoning_parser else None
        self.tools = tool_call_parser(self.config.tool_call_parser) if self.config.tool_call_parser else None


def get_state(request: Request) -> ServerState:
    return request.app.state.tierlm
