"""The FastAPI app factory: routes, error handlers, middleware and the engine link's lifespan."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, Optional

import anyio
import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tierlm.config import EngineConfig
from tierlm.server.discovery_routes import discovery_router
from tierlm.server.engine_client import EngineClient, EngineDeadError
from tierlm.server.errors import error_response, install_error_handlers
from tierlm.server.metrics import ServerMetrics
from tierlm.server.middleware import (DEFAULT_MAX_BODY_BYTES, APIKeyMiddleware, BodyReaderMiddleware,
                                      RequestCountMiddleware)
from tierlm.server.native_routes import native_router
from tierlm.server.openai_routes import openai_router
from tierlm.server.prompt_encoder import PromptEncoder
from tierlm.server.requests import ServingInfo, max_body_bytes
from tierlm.server.state import ServerState, get_state
from tierlm.server.tokenize_routes import tokenize_router

log = logging.getLogger(__name__)


async def health(request: Request) -> Response:
    st = get_state(request)
    if not st.ready or st.client.dead:
        return error_response(503, "the engine is not ready", None, "engine_unavailable")
    return JSONResponse({"status": "ok", "model": st.info.model_name})


async def _engine_stats(st: ServerState) -> dict[str, Any]:
    try:
        stats = await st.client.stats(timeout=5.0)
    except (EngineDeadError, asyncio.TimeoutError):
        return {}
    st.metrics.update_engine(stats)
    return stats


async def metrics(request: Request) -> Response:
    st = get_state(request)
    await _engine_stats(st)
    return Response(st.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def stats(request: Request) -> Response:
    st = get_state(request)
    s = await _engine_stats(st)
    if not s:
        return error_response(503, "the engine is not answering", None, "engine_unavailable")
    return JSONResponse({**s, "frontend_in_flight": st.client.num_in_flight})


def create_app(config: EngineConfig, info: ServingInfo, tokenizer: Any, client: EngineClient,
               engine_info: Optional[dict[str, Any]] = None) -> FastAPI:
    """A new app serving `info.model_name` through `client` (connected in the app's lifespan); `engine_info`
    is the engine's READY message (what the discovery endpoints report)."""
    metrics_ = ServerMetrics(info.model_name, config.page_size)
    encoder = None if tokenizer is None else PromptEncoder(tokenizer, info.max_model_len)
    state = ServerState(client=client, tokenizer=tokenizer, encoder=encoder, info=info, config=config,
                        metrics=metrics_, engine_info=dict(engine_info or {}))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await client.start()
        await _warm_up(encoder, app)
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            client.shutdown_engine()
            await client.close()

    app = FastAPI(title="TierLM", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible completions and chat, plus a native /generate on token ids.")
    app.state.tierlm = state
    install_error_handlers(app)
    app.add_api_route("/health", health, methods=["GET"], summary="200 once the engine is ready, else 503")
    app.add_api_route("/metrics", metrics, methods=["GET"], summary="Prometheus metrics")
    app.add_api_route("/stats", stats, methods=["GET"], summary="Engine statistics (KV pool, queues, cache hits)")
    app.include_router(discovery_router())
    app.include_router(openai_router())
    app.include_router(native_router())
    app.include_router(tokenize_router())
    _document_model_name(app, info.model_name)
    # Last added runs first: count, then the key check, then the bounded body read.
    body_cap = min(DEFAULT_MAX_BODY_BYTES, max_body_bytes(info, encoder.max_token_chars if encoder else 1))
    app.add_middleware(BodyReaderMiddleware, max_bytes=body_cap, timeout_s=config.request_body_timeout)
    if config.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=config.api_key)
    app.add_middleware(RequestCountMiddleware, metrics=metrics_)
    return app


async def _warm_up(encoder: Optional[PromptEncoder], app: Optional[FastAPI] = None) -> None:
    """Before the server reports ready: load what the first request would otherwise load on its path (anyio's
    asyncio backend, imported on a streaming response's first task group; the tokenizer's threads and chat
    template; FastAPI's context of each endpoint, `warm_routes`)."""
    async with anyio.create_task_group():
        pass
    if encoder is not None:
        await encoder.warm_up()
    if app is not None:
        warm_routes(app)


def warm_routes(app: FastAPI) -> None:
    """Have FastAPI note each endpoint's source file and line now rather than on the endpoint's first request:
    it reads and tokenizes the endpoint's source then (for its error messages) and keeps the result. Through a
    private function of FastAPI's (`fastapi.routing._extract_endpoint_context`): where a FastAPI lacks it,
    nothing is done and the first request pays as before."""
    extract = getattr(fastapi.routing, "_extract_endpoint_context", None)
    if not callable(extract):
        return
    pending = list(app.routes)
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)  # a router included lazily (newer FastAPI)
        pending.extend(getattr(included, "routes", None) or getattr(route, "routes", None) or [])
        call = getattr(getattr(route, "dependant", None), "call", None)
        if call is not None:
            with contextlib.suppress(Exception):  # a warm-up: the endpoint's first request pays instead
                extract(call)


def _document_model_name(app: FastAPI, name: str) -> None:
    """State in /openapi.json that `model` must be the served name (clients and fuzzers then send it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        for model in ("CompletionRequest", "ChatCompletionRequest"):
            props = schema.get("components", {}).get("schemas", {}).get(model, {}).get("properties", {})
            if "model" in props:
                props["model"] = {**props["model"], "enum": [name], "description": "The served model name."}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _version() -> str:
    from tierlm import __version__

    return __version__
