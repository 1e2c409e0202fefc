"""``X-Request-Id`` on every response: the caller's own id when it sent a well-formed one (the router sends
its request id), else a new one. The `openai` client exposes it as ``response._request_id``."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
_WELL_FORMED = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")  # no spaces, no control characters, bounded


def request_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The id to answer with: the first well-formed ``X-Request-Id`` sent, else a new ``req-<hex>``."""
    for name, value in headers:
        if name == HEADER and _WELL_FORMED.fullmatch(value):
            return value
    return b"req-" + uuid.uuid4().hex.encode()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope.get("headers") or [])

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid)]}
            await send(message)

        await self.app(scope, receive, send_with_id)
