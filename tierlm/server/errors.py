"""OpenAI-style error answers: every failure is `{"error": {message, type, param, code}}`, never a traceback."""
from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tierlm.errors import RequestError

log = logging.getLogger(__name__)

_TYPES = MappingProxyType({400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                           405: "invalid_request_error", 408: "invalid_request_error",
                           413: "invalid_request_error", 503: "overloaded_error"})


class APIError(RequestError):
    """A refusal decided by the HTTP layer itself (unknown model, missing API key, ...): the status is given
    per instance. Everything else the server refuses is a `RequestError` subclass with its own status."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message, param, code)
        self.http_status = status


def error_body(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    """The JSON error object for `status` (also used inside SSE streams)."""
    etype = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": _printable(message), "type": etype, "param": _printable(param), "code": code}}


def _printable(text: Optional[str]) -> Optional[str]:
    """`text` as valid Unicode: a lone surrogate echoed from the request becomes a `\\udxxx` escape."""
    if text is None or text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(status: int, message: str, param: Optional[str] = None,
                   code: Optional[str] = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status)


def _loc_name(loc: tuple) -> Optional[str]:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or None


def describe_validation_errors(errors: list[dict[str, Any]]) -> tuple[str, Optional[str]]:
    """One readable message (and the first field's name) from pydantic/FastAPI validation errors."""
    if not errors:
        return "Invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "JSON decode error")
        return f"Request body is not valid JSON: {detail} (at character {first['loc'][-1]})", None
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return "Request body is missing: send a JSON object with Content-Type: application/json", None
    if tuple(first.get("loc", ())) == ("body",) and first.get("type") in ("model_attributes_type", "dict_type"):
        return "Request body must be a JSON object (send Content-Type: application/json)", None
    param = _loc_name(tuple(first.get("loc", ())))
    # A union reports one error per branch; name the field once and keep the messages short.
    seen: list[str] = []
    for err in errors:
        name = _loc_name(tuple(err.get("loc", ())))
        top = name.split(".")[0] if name else None
        if param and top != param.split(".")[0]:
            continue
        text = f"{name}: {err.get('msg', 'invalid value')}" if name else err.get("msg", "invalid value")
        if text not in seen:
            seen.append(text)
        if len(seen) == 3:
            break
    return "Invalid request: " + "; ".join(seen), param


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception type the app can meet to an OpenAI-style JSON body."""

    async def on_request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.http_status, exc.message, exc.param, exc.code)

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_errors(list(exc.errors()))
        return error_response(400, message, param, "invalid_value" if param else "invalid_body")

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            detail = "Request body could not be parsed: it must be UTF-8 encoded JSON"
        elif exc.status_code == 404:
            detail = f"Not found: {request.url.path}"
        elif exc.status_code == 405:
            detail = f"Method {request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, detail, None, None)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "Internal server error; see the server log.", None, "internal_error")

    app.add_exception_handler(RequestError, on_request_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
