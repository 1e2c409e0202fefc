"""Server-sent events, as the OpenAI streaming API sends them: split into whole events, each one's data read.

The router forwards an upstream's stream event by event (never half an event), so that it can stop at a
clean boundary, drop what the client did not ask for, and continue an answer elsewhere. Per the SSE spec
(https://html.spec.whatwg.org/multipage/server-sent-events.html) an event ends with a blank line; a line is
a field (``data``, ``event``, ``id``, ``retry``) or a comment (``:``). Lines end with LF or CRLF.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import from_json

DONE = b"[DONE]"
_FIELDS = (b"data", b"event", b"id", b"retry")


class EventTooLarge(ValueError):
    """One event (or what is buffered of it) is larger than the limit."""


class SseSplitter:
    """Feeds bytes in, gives whole events out (each with its terminating blank line), keeps the rest."""

    __slots__ = ("_buf", "limit")

    def __init__(self, limit: int) -> None:
        self._buf = b""
        self.limit = limit

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        events: list[bytes] = []
        start = 0
        while True:
            lf = buf.find(b"\n\n", start)
            crlf = buf.find(b"\n\r\n", start)
            if lf < 0 and crlf < 0:
                break
            end = lf + 2 if crlf < 0 or 0 <= lf < crlf else crlf + 3
            events.append(buf[start:end])
            start = end
        self._buf = buf[start:] if start < len(buf) else b""
        if len(self._buf) > self.limit:
            raise EventTooLarge(f"an event is larger than {self.limit} bytes")
        return events

    @property
    def pending(self) -> bytes:
        return self._buf


def event_data(event: bytes) -> bytes | None:
    """The ``data`` of one event (several data lines joined by LF); None for an event without data."""
    if event.startswith(b"data: ") and event.count(b"\n") <= 2 and b"\r" not in event:
        return event[6:].rstrip(b"\n")  # the usual shape: one data line
    parts = []
    for line in event.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
        elif line == b"data":
            parts.append(b"")
    return b"\n".join(parts) if parts else None


def looks_like_sse(chunk: bytes) -> bool:
    """Whether the first bytes of a stream are an event stream (a field name or a comment first)."""
    head = chunk.lstrip(b"\r\n")
    if not head:
        return True
    if head.startswith(b":"):
        return True
    name = head.split(b":", 1)[0].split(b"\n", 1)[0].rstrip(b"\r")
    return name in _FIELDS


def parse_json_event(data: bytes) -> dict[str, Any] | None:
    """An event's data as a JSON object; None when it is not one (a malformed event)."""
    try:
        value = from_json(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def encode_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"
