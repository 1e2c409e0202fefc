"""Server-sent events: framing, and the guarantees every stream keeps (an error event instead of a cut
connection when something fails after the response started, and ``data: [DONE]`` at the end)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

from .errors import sse_error

log = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _guarded(pieces: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for piece in pieces:
            yield piece
    except Exception as exc:  # the status line is sent: the error goes into the stream, logged once here
        log.error("event stream failed", exc_info=exc)
        yield sse_error(500, f"internal error ({type(exc).__name__})", "internal_error")
    yield DONE


def sse_response(pieces: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        _guarded(pieces),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
