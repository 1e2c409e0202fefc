"""Errors in the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``; never a traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.openai_errors import error_type

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def sse_error(status: int, message: str, code: str) -> str:
    """An error inside an already started event stream (OpenAI clients raise it as APIError); ``status`` is
    the one the request would have had before streaming began, and sets the error's type."""
    return f"data: {json.dumps(error_body(status, message, None, code))}\n\n"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "function-after", "union"})


def _param_path(loc: tuple) -> list[str]:
    """Field path of a pydantic error, without the union-branch tags pydantic inserts (``str``, ``list[...]``)."""
    return [str(p) for p in loc if p != "body" and not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS))]


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """Message and param of the first of pydantic's errors."""
    if not errors:
        return "invalid request body", None
    first = errors[0]
    loc = _param_path(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}", None
    if not loc and first.get("type") in ("model_attributes_type", "dict_type"):
        return "the request body must be a JSON object", None
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    if first.get("type") == "missing":
        return (f"'{param}' is required", param) if param else ("the request body must be a JSON object", None)
    shown = f" (got {_short(first['input'])})" if "input" in first and first["type"] != "missing" else ""
    more = f"; {len(errors) - 1} more problem(s)" if len(errors) > 1 else ""
    return f"'{param}': {msg}{shown}{more}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc.errors())
        return error_response(400, message, param, "invalid_value" if param else "invalid_body")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail) if exc.status_code != 404 else f"no route {request.url.path}"
        return error_response(exc.status_code, message, None, None, getattr(exc, "headers", None))


class InternalErrorMiddleware:
    """An exception escaping a route becomes one logged traceback and a 500 in the OpenAI shape. (With an
    ``Exception`` handler, Starlette's error middleware answers and then re-raises, and uvicorn logs the
    same traceback a second time.) A response already started cannot turn into a 500: its connection
    ends; event streams catch their own errors and end with an error event instead."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.error("unhandled error in %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            if not started:
                await error_response(500, f"internal error ({type(exc).__name__})", None, "internal_error")(
                    scope, receive, send
                )
