"""Pure-ASGI middleware: API-key check on the generation endpoints, a cap on request body size, and
per-endpoint request counting.

Both answer before the body is parsed (a missing key is a 401 even for a malformed body, as with OpenAI),
and neither wraps the response stream, so SSE and disconnect detection are untouched.
"""
from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Optional

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tierlm.server.errors import error_body

if TYPE_CHECKING:
    from tierlm.server.metrics import ServerMetrics

PROTECTED_PREFIXES = ("/v1/", "/generate")
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


async def _send_error(send: Send, status: int, message: str, code: str,
                      extra_headers: Optional[list[tuple[bytes, bytes]]] = None) -> None:
    body = json.dumps(error_body(status, message, None, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})


class APIKeyMiddleware:
    """Requires `Authorization: Bearer KEY` on /v1/* and /generate when the server has an API key."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIXES):
            return await self.app(scope, receive, send)
        auth = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        challenge = [(b"www-authenticate", b"Bearer")]
        if not auth:
            return await _send_error(send, 401, "Missing API key: send the header 'Authorization: Bearer <key>'",
                                     "missing_api_key", challenge)
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
            return await _send_error(send, 401, "Invalid API key", "invalid_api_key", challenge)
        return await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses a body whose Content-Length is above `max_bytes` with 413, before reading it."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
                return await _send_error(send, 413, f"Request body is larger than {self.max_bytes} bytes",
                                         "body_too_large")
        return await self.app(scope, receive, send)


COUNTED_PATHS = ("/v1/completions", "/v1/chat/completions", "/generate", "/v1/models", "/health", "/metrics",
                 "/stats")


class RequestCountMiddleware:
    """Counts HTTP answers per endpoint and status in `tierlm_requests_total` (unknown paths as 'other')."""

    def __init__(self, app: ASGIApp, metrics: "ServerMetrics"):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in COUNTED_PATHS else "other"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(endpoint, str(message["status"])).inc()
            await send(message)

        return await self.app(scope, receive, counting_send)
