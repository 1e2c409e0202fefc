"""Bounds on the router's client connections, where uvicorn has none: its httptools protocol, extended.

uvicorn (0.3x-0.5x) with httptools puts no limit on the size or number of request headers (httptools keeps
a header being received in memory however long it grows), no time limit on their arrival or on a body's, no
bound on the connections one process holds open, and waits for ever on a client that does not read its
answer. This protocol adds, per process:

- ``server.max_header_bytes`` for the request line and headers, ``server.max_headers`` fields: a 431;
- ``server.header_timeout_s`` for the headers to arrive (from the connection's start, or from the end of
  the previous answer plus the keep-alive time), ``timeouts.body_s`` (plus a second, after the app's own
  408) for the body: a 408, or the connection closed;
- ``server.max_connections`` open connections: the next ones get a 503 and are closed;
- ``timeouts.stream_idle_s`` for a client whose socket stops taking the answer: the connection is aborted;
- a client that goes away while its request waits for an upstream: the waiting task is cancelled (the
  app records ``client_disconnected`` and the upstream stops working on it).

Deadlines are swept four times a second: no timer per request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inference.router.errors import error_body

CONNECTION = "dsdeploy.connection"  # scope["extensions"] key: the client connection, for disconnect watching
SWEEP_S = 0.25


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float
    keepalive_s: float
    write_stall_s: float


class ConnectionGuard:
    """The deadlines of one server's connections, and the sweep that enforces them."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.reading: dict[GuardedProtocol, tuple[float, str]] = {}  # waiting for headers or a body
        self.writing: dict[GuardedProtocol, float] = {}  # the client stopped reading at that time
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._sweep(), name="connection deadlines")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for proto, (deadline, what) in list(self.reading.items()):
                if now >= deadline:
                    self.reading.pop(proto, None)
                    proto.timed_out(what)
            stall = self.limits.write_stall_s
            for proto, since in list(self.writing.items()):
                if now - since >= stall:
                    self.writing.pop(proto, None)
                    proto.transport.abort()  # it reads nothing: the buffered answer can never be flushed


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of this module (set ``guard`` on a subclass)."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_bytes = 0
        self.in_headers = True  # between requests or inside a request's headers (not in a body, not in the app)
        self.in_body = False  # the request's headers are in, its body is not all in yet
        self.refused = False
        self.waiting_task: asyncio.Task[Any] | None = None  # a request waiting for its upstream
        self.client_left = False

    # ------------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        guard.start()
        if len(self.connections) > guard.limits.max_connections:
            self.refuse(
                503,
                f"The router holds its limit of {guard.limits.max_connections} open connections "
                "(server.max_connections); try again shortly.",
                "too_many_connections",
            )
            return
        guard.reading[self] = (time.monotonic() + guard.limits.header_timeout_s, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.reading.pop(self, None)
        self.guard.writing.pop(self, None)
        task = self.waiting_task
        if task is not None and not task.done():
            self.client_left = True
            task.cancel("dsdeploy: client_disconnected")
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.in_headers:
            limit = self.guard.limits.max_header_bytes
            if self.header_bytes + len(data) > limit:
                end = data.find(b"\r\n\r\n")  # the headers may end in this chunk, before the limit
                if end < 0 or self.header_bytes + end + 4 > limit:
                    self.refuse(
                        431,
                        f"The request's headers are larger than {limit} bytes (server.max_header_bytes).",
                        "request_header_fields_too_large",
                    )
                    return
            self.header_bytes += len(data)
        super().data_received(data)

    def pause_writing(self) -> None:
        self.guard.writing.setdefault(self, time.monotonic())
        super().pause_writing()

    def resume_writing(self) -> None:
        self.guard.writing.pop(self, None)
        super().resume_writing()

    # ------------------------------------------------------------------ parser callbacks
    def on_headers_complete(self) -> None:
        if self.refused:
            return
        limits = self.guard.limits
        if len(self.headers) > limits.max_headers:
            self.refuse(
                431,
                f"The request has more than {limits.max_headers} header fields (server.max_headers).",
                "request_header_fields_too_large",
            )
            return
        self.in_headers = False
        self.in_body = True
        self.guard.reading[self] = (time.monotonic() + limits.body_timeout_s, "body")
        # uvicorn types an extension's value as a dict; ours is the connection itself (watch_disconnect reads it)
        self.scope["extensions"] = {CONNECTION: self}  # type: ignore[dict-item]
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.refused:
            return
        self.in_body = False
        self.guard.reading.pop(self, None)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        if (
            not self.in_headers
            and not self.in_body
            and (cycle is None or cycle.response_complete)
            and not self.transport.is_closing()
        ):
            # idle until the next request: uvicorn's keep-alive timer closes it; one trickling a request
            # in (which stops that timer) has header_timeout_s more
            self.in_headers = True
            self.header_bytes = 0
            limits = self.guard.limits
            self.guard.reading[self] = (time.monotonic() + limits.keepalive_s + limits.header_timeout_s, "headers")

    # ------------------------------------------------------------------ refusing
    def timed_out(self, what: str) -> None:
        if self.transport.is_closing():
            return
        if what == "headers":
            self.refuse(
                408,
                f"The request's headers did not arrive within {self.guard.limits.header_timeout_s:g} s "
                "(server.header_timeout_s).",
                "request_timeout",
            )
        else:  # a body the app is not reading (it answers 408 itself where it reads one)
            self.transport.abort()

    def refuse(self, status: int, message: str, code: str) -> None:
        """Answer with an error of our own and close: no app sees this request."""
        self.refused = True
        self.guard.reading.pop(self, None)
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.abort()  # an answer is being written on this connection: it cannot get a second one
            return
        body = error_body(status, message, code=code)
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason.get(status, b"Error"), len(body), body)
        )
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with its own guard (one per server)."""
    return type("GuardedHttpToolsProtocol", (GuardedProtocol,), {"guard": ConnectionGuard(limits)})


def watch_disconnect(scope: dict[str, Any], task: asyncio.Task[Any] | None) -> GuardedProtocol | None:
    """Let the client's connection cancel ``task`` if the client goes away (None to stop watching)."""
    conn = scope.get("extensions", {}).get(CONNECTION) if "extensions" in scope else None
    if conn is not None:
        conn.waiting_task = task
    return conn
