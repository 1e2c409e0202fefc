"""Every answer the router starts: one way to build its headers, and to send a whole body or an error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from inference.router.backoff import retry_after_header
from inference.router.errors import RouterError

Send = Callable[[dict[str, Any]], Awaitable[None]]
JSON = b"application/json"
LOCAL = b"local"
NO_CACHE = (b"cache-control", b"no-cache")
# An event stream's headers: not cached, and not buffered by nginx-style proxies in front of the router (the
# header nginx documents for that: https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_buffering).
STREAM_HEADERS = (NO_CACHE, (b"x-accel-buffering", b"no"))


def response_headers(
    content_type: bytes,
    route: bytes,
    request_id: bytes,
    *,
    length: int | None = None,
    retry_after: float | None = None,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> list[tuple[bytes, bytes]]:
    """The headers of every answer: its type (and length), ``X-Dsdeploy-Route``, the request id (as
    ``X-Request-Id``, which the `openai` client exposes as ``_request_id``, and as ``X-Dsdeploy-Request-Id``),
    and a ``Retry-After`` of whole seconds when one is given."""
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", b"%d" % length))
    headers.append((b"x-dsdeploy-route", route))
    headers.append((b"x-dsdeploy-request-id", request_id))
    headers.append((b"x-request-id", request_id))
    if retry_after is not None:
        headers.append((b"retry-after", retry_after_header(retry_after)))
    if extra:
        headers.extend(extra)
    return headers


async def send_whole(
    send: Send,
    status: int,
    content_type: bytes,
    route: bytes,
    request_id: bytes,
    body: bytes,
    *,
    retry_after: float | None = None,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": response_headers(
                content_type, route, request_id, length=len(body), retry_after=retry_after, extra=extra
            ),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: RouterError, route: bytes, request_id: bytes) -> None:
    extra = ((b"allow", exc.allow.encode()),) if exc.allow else ()
    await send_whole(send, exc.status, JSON, route, request_id, exc.body(), retry_after=exc.retry_after, extra=extra)
