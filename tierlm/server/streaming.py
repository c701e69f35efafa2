"""From a `Generation` to an HTTP answer: JSON, or an SSE stream that aborts the moment the client goes away."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tierlm.server.errors import APIError
from tierlm.server.generation import ClientGone, Generation, collect, until_disconnect

CLIENT_GONE = 499  # nginx's "client closed request"; nobody reads it


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class GenerationStream(StreamingResponse):
    """Streams server-sent events; on disconnect (detected even while no token is flowing) it cancels the
    stream and aborts every unfinished sub-request, so their KV is freed at once."""

    def __init__(self, content: AsyncIterator[str], gen: Generation):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.gen = gen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(super().__call__(scope, receive, send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait({stream, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not stream.done():
                stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientDisconnect, OSError):
                await stream
            self.gen.close()


async def respond(request: Request, gen: Generation, stream: bool,
                  events: Callable[[Generation], AsyncIterator[str]],
                  build: Callable[[Generation, dict[str, dict]], dict[str, Any]]) -> Response:
    """Start `gen` (refusals become the HTTP status), then stream `events(gen)` as SSE, or collect it and
    answer `build(gen, results)` as JSON. A client that disconnects gets its requests aborted."""
    try:
        await until_disconnect(request, gen.start())
    except ClientGone:
        gen.close()
        return Response(status_code=CLIENT_GONE)
    if stream:
        return GenerationStream(events(gen), gen)
    try:
        results = await until_disconnect(request, collect(gen))
    except ClientGone:
        return Response(status_code=CLIENT_GONE)
    finally:
        gen.close()
    failed = next((r["error"] for r in results.values() if r["error"]), None)
    if failed:
        raise APIError(500, f"generation failed: {failed}", None, "engine_error")
    return JSONResponse(build(gen, results))
