"""Pure-ASGI middleware: API-key check on the generation endpoints, a bounded body reader (size, time,
encoding), and per-endpoint request counting.

They answer before the body is parsed (a missing key is a 401 even for a malformed body, as with OpenAI; the
key is checked before any of the body is read), and none wraps the response stream, so SSE and disconnect
detection are untouched.
"""
from __future__ import annotations

import asyncio
import hmac
import json
from typing import TYPE_CHECKING, Optional

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tierlm.server.errors import error_body

if TYPE_CHECKING:
    from tierlm.server.metrics import ServerMetrics

PROTECTED_PREFIXES = ("/v1/", "/generate", "/tokenize", "/detokenize")
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 30.0


async def _send_error(send: Send, status: int, message: str, code: str,
                      extra_headers: Optional[list[tuple[bytes, bytes]]] = None) -> None:
    body = json.dumps(error_body(status, message, None, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})


class APIKeyMiddleware:
    """Requires `Authorization: Bearer KEY` on /v1/*, /generate, /tokenize and /detokenize when the server has an
    API key."""

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


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


def _not_utf8(body: bytes) -> bool:
    """UTF-16/32 JSON (a byte-order mark, or NULs among the first bytes), which `json.loads` would accept."""
    return body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:4]


class BodyReaderMiddleware:
    """Reads each request body in full before the app runs, within bounds, and hands it to the app from memory.

    - At most `max_bytes`: a larger Content-Length is refused (413) before reading; a chunked body is counted
      as it arrives and refused the moment it passes the cap, so it is never read further.
    - Within `timeout_s`: a body that stalls, or declares more bytes than it sends, is answered 408.
    - UTF-8 only: a UTF-16/32 body is refused (400) instead of being decoded by the JSON parser.
    Refusals close the connection (the rest of the body is never read).
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 timeout_s: float = DEFAULT_BODY_TIMEOUT_S):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        close = [(b"connection", b"close")]
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await _send_error(send, 413, self._too_large(), "body_too_large", close)
        try:
            body = await asyncio.wait_for(self._read(receive), self.timeout_s)
        except _ClientGone:
            return None
        except _BodyTooLarge:
            return await _send_error(send, 413, self._too_large(), "body_too_large", close)
        except asyncio.TimeoutError:
            return await _send_error(send, 408, f"Request body not received within {self.timeout_s:g} s "
                                                f"(--request-body-timeout)", "body_timeout", close)
        if _not_utf8(body):
            return await _send_error(send, 400, "Request body must be UTF-8 encoded JSON (it looks like UTF-16 "
                                                "or UTF-32)", "invalid_body", close)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: disconnect notices
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"Request body is larger than {self.max_bytes} bytes: no request this server can serve is larger"

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _BodyTooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


COUNTED_PATHS = ("/v1/completions", "/v1/chat/completions", "/generate", "/v1/models", "/health", "/metrics",
                 "/stats", "/version", "/server_info", "/get_server_info", "/model_info", "/get_model_info")


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
