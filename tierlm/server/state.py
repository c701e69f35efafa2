"""`ServerState`: everything a request handler needs, stored on `app.state.tierlm` by the app factory."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from tierlm.config import EngineConfig
from tierlm.server.engine_client import EngineClient
from tierlm.server.metrics import ServerMetrics
from tierlm.server.requests import ServingInfo


@dataclass
class ServerState:
    """The engine link, tokenizer, model facts and metrics of one running server (one per app)."""

    client: EngineClient
    tokenizer: Any
    info: ServingInfo
    config: EngineConfig
    metrics: ServerMetrics
    created: int = field(default_factory=lambda: int(time.time()))
    ready: bool = False


def get_state(request: Request) -> ServerState:
    return request.app.state.tierlm
