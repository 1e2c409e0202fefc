"""Relay of a server-sent-event stream to the client, chunk by chunk, with a clear error event on failure."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from inference.router.errors import stream_error_event
from inference.router.proxy import Reply

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class StreamOutcome:
    completed: bool = False
    client_gone: bool = False
    error: str | None = None
    events: int = 0
    usage: dict[str, Any] = field(default_factory=dict)


def _scan(chunk: bytes, outcome: StreamOutcome) -> None:
    outcome.events += chunk.count(b"data:")
    if b'"usage"' in chunk:
        for line in chunk.split(b"\n"):
            if line.startswith(b"data: {") and b'"usage"' in line:
                try:
                    usage = json.loads(line[6:]).get("usage")
                except ValueError:
                    continue
                if isinstance(usage, dict):
                    outcome.usage = usage


async def relay(reply: Reply, send: Send, receive: Receive, idle_s: float, deadline: float) -> StreamOutcome:
    """Send the reply's first chunk and the rest of its stream; end with an error event if it breaks.

    The caller has already sent the response start. Stops reading the upstream when the client leaves.
    """
    assert reply.stream is not None and reply.first_chunk is not None
    outcome = StreamOutcome()
    content = reply.stream
    first = reply.first_chunk
    tail = first[-32:]
    _scan(first, outcome)
    await send({"type": "http.response.body", "body": first, "more_body": True})
    gone = asyncio.ensure_future(receive())  # resolves with http.disconnect when the client leaves
    gone.add_done_callback(lambda _: reply.close())  # stop reading (and let the engine stop generating)
    loop = asyncio.get_running_loop()
    sending = False
    try:
        try:
            # One timer per stream, re-armed per chunk (no task per chunk as with wait_for). It also
            # bounds each send: a client that stops reading (its socket buffer full) is cut after
            # stream_idle_s or at the request deadline, instead of holding the upstream slot forever.
            async with asyncio.timeout(None) as guard:
                while True:
                    guard.reschedule(loop.time() + min(idle_s, max(0.0, deadline - time.monotonic())))
                    chunk = await content.readany()
                    if not chunk:
                        break
                    _scan(chunk, outcome)
                    tail = (tail + chunk)[-32:]
                    guard.reschedule(loop.time() + min(idle_s, max(0.0, deadline - time.monotonic())))
                    sending = True
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    sending = False
        except TimeoutError:
            if sending:  # the client stopped reading: nothing more can be sent to it
                outcome.error = "client_stalled"
                return outcome
            outcome.error = "request_timeout" if time.monotonic() >= deadline else "stream_idle_timeout"
        except (aiohttp.ClientError, OSError, ValueError):
            outcome.error = "stream_interrupted"
        if gone.done():
            outcome.client_gone = True
            outcome.error = None
            return outcome
        if outcome.error is None:
            if b"[DONE]" in tail:
                outcome.completed = True
            else:
                outcome.error = "stream_interrupted"
        if outcome.error is not None:
            message = {
                "stream_interrupted": "The upstream stream ended before the answer was complete.",
                "stream_idle_timeout": f"The upstream sent nothing for {idle_s:g} s; the stream was ended.",
                "request_timeout": "The request ran past its time limit; the stream was ended.",
            }[outcome.error]
            await send({"type": "http.response.body", "body": stream_error_event(message, outcome.error),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return outcome
    finally:
        gone.cancel()
        reply.close()
