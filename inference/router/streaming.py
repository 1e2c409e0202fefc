"""Relay of a chat/completion event stream to the client, event by event.

The upstream's events go out whole and unchanged (the usage event the router asked for on its own is left
out). A stream that ends with every choice finished is complete, ``[DONE]`` or not. A stream that breaks
(cut, stalled, a malformed event, an error event, its engine found frozen) is continued from the cloud when
its data may leave and the cloud takes the prefix (``continuation.py``); otherwise it ends with one clean
error event, never as if it were complete.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from inference.router.continuation import ChatStream, ContinuedEvents
from inference.router.errors import stream_error_event
from inference.router.proxy import AttemptFailed, Reply
from inference.router.reasoning_shape import rename_reasoning
from inference.router.reasons import STREAM_INTERRUPTED, STREAM_STALLED
from inference.router.sse import (
    DONE,
    DONE_EVENT,
    EventTooLarge,
    SseSplitter,
    encode_event,
    event_data,
    parse_json_event,
)
from inference.router.upstream_http import UpstreamClosed, UpstreamTooLarge

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Continuer = Callable[[ChatStream], Awaitable[Reply]]

# Why a stream ended early (the audit line's `error`, and its failures entry).
INTERRUPTED = STREAM_INTERRUPTED
STALLED = STREAM_STALLED
IDLE = "stream_idle_timeout"
MALFORMED = "malformed_response"
UPSTREAM_ERROR = "upstream_error_event"
TOO_LARGE = "answer_too_large"
TIMEOUT = "request_timeout"
CLIENT_STALLED = "client_stalled"
CLIENT_GONE = "client_disconnected"
_MESSAGES = {
    INTERRUPTED: "The upstream stream ended before the answer was complete.",
    STALLED: "The upstream stopped sending and was found unresponsive; the stream was ended.",
    MALFORMED: "The upstream sent an event that is not a JSON object; the stream was ended.",
    UPSTREAM_ERROR: "The upstream reported an error in the middle of the answer; the stream was ended.",
    TOO_LARGE: "The upstream's answer grew past limits.max_answer_bytes; the stream was ended.",
    TIMEOUT: "The request ran past its time limit; the stream was ended.",
}


@dataclass(slots=True)
class StreamPlan:
    """How one stream is relayed: its time limits, whether the client asked for usage, who may continue it."""

    idle_s: float  # longest silence of the upstream (and of a client that reads nothing)
    stall_s: float  # silence after which a stream that may be continued is continued
    deadline: float  # time.monotonic() limit of the whole request
    client_wants_usage: bool
    max_bytes: int  # one event, and the text kept for a continuation
    continuer: Continuer | None = None  # the cloud's prefix completion, when the data may leave
    watchers: set[Any] | None = None  # the local upstream's streams (its probes tell them when it freezes)


@dataclass(slots=True)
class StreamOutcome:
    completed: bool = False
    client_gone: bool = False
    error: str | None = None
    usage: dict[str, Any] | None = None  # the usage of the whole answer (both parts when continued)
    tokens: int = 0  # completion tokens counted from the events (when no usage came)
    continuation: str | None = None  # "cloud" when the cloud wrote the rest
    continued_reason: str | None = None
    cloud_usage: dict[str, Any] | None = None  # the cloud part's own usage (its spend)
    cloud_called: bool = False  # the cloud took the continuation (it bills it, whole or cut)
    cloud_tokens: int = 0  # completion tokens the cloud part's events carried (when its usage never came)
    prefix_tokens: int = 0  # the local part the cloud continued (part of the cloud's prompt)
    failures: list[str] = field(default_factory=list)


class StreamRelay:
    """One client stream: the local (or cloud) reply, and maybe the cloud's continuation of it."""

    def __init__(self, send: Send, receive: Receive, plan: StreamPlan, label: str) -> None:
        self.send = send
        self.receive = receive
        self.plan = plan
        self.label = label
        self.outcome = StreamOutcome()
        self.current: Reply | None = None
        self.lost = False  # the engine was found unresponsive while we read its stream

    def engine_lost(self) -> None:
        """Called by the health monitor: the engine of this stream stopped answering its probes."""
        self.lost = True
        if self.current is not None:
            self.current.close()  # wakes the waiting read

    async def run(self, reply: Reply) -> StreamOutcome:
        plan, out = self.plan, self.outcome
        gone = asyncio.ensure_future(self.receive())  # resolves with http.disconnect when the client leaves
        gone.add_done_callback(lambda _: self._close())  # stop reading (and let the engine stop generating)
        local = ChatStream(plan.max_bytes)
        if plan.watchers is not None:
            plan.watchers.add(self)
        try:
            why = await self._pump(reply, local, None, plan.stall_s if plan.continuer else plan.idle_s)
            if plan.watchers is not None:
                plan.watchers.discard(self)
            out.tokens, out.usage = local.tokens, local.usage
            if gone.done() or why == CLIENT_GONE:
                out.client_gone, out.error = True, CLIENT_GONE
                return out
            if why == CLIENT_STALLED:
                out.error = why
                return out
            if why is None:
                out.completed = True
                await self._end()
                return out
            out.failures.append(f"{self.label}:{why}")
            if plan.continuer is not None and local.continuable and why != TIMEOUT:
                why = await self._continue(local, why)
                if gone.done():
                    out.client_gone, out.error = True, CLIENT_GONE
                    return out
                if why is None:
                    out.completed = True
                    await self._end()
                    return out
            out.error = why
            if why != CLIENT_STALLED:
                message = (
                    f"The upstream sent nothing for {plan.idle_s:g} s; the stream was ended."
                    if why == IDLE
                    else _MESSAGES.get(why, _MESSAGES[INTERRUPTED])
                )
                await self._end(stream_error_event(message, why))
            return out
        finally:
            gone.cancel()
            self._close()
            if plan.watchers is not None:
                plan.watchers.discard(self)

    async def _continue(self, local: ChatStream, why: str) -> str | None:
        """The rest of the answer from the cloud; None when it came whole, else why the stream ends."""
        plan, out = self.plan, self.outcome
        assert plan.continuer is not None
        self._close()  # the local engine stops generating
        try:
            reply = await plan.continuer(local)
        except AttemptFailed as failure:
            out.failures.append(f"cloud:{failure.reason}")
            return why
        if reply.status != 200 or reply.first_chunk is None:
            out.failures.append(f"cloud:prefix_refused_{reply.status}")
            reply.close()
            return why
        cloud = ChatStream(plan.max_bytes)
        rewriter = ContinuedEvents(local, plan.client_wants_usage)
        self.label = "cloud"
        self.lost = False
        out.cloud_called, out.prefix_tokens = True, local.tokens
        result = await self._pump(reply, cloud, rewriter, plan.idle_s)
        out.cloud_usage, out.cloud_tokens = cloud.usage, cloud.tokens
        if result is None:
            out.continuation, out.continued_reason = "cloud", why
            out.usage = rewriter.usage
            out.tokens = local.tokens + cloud.tokens
            return None
        out.failures.append(f"cloud:{result}")
        return result if result in (CLIENT_GONE, CLIENT_STALLED) else why

    async def _pump(
        self, reply: Reply, seen: ChatStream, rewriter: ContinuedEvents | None, silence_s: float
    ) -> str | None:
        """Forward ``reply``'s events until the stream is complete (None) or breaks (the reason)."""
        stream = reply.stream
        assert stream is not None and reply.first_chunk is not None
        self.current = reply
        plan = self.plan
        splitter = SseSplitter(plan.max_bytes)
        loop = asyncio.get_running_loop()
        chunk = reply.first_chunk
        sending = False
        try:
            # One timer per stream, re-armed per chunk. It also bounds each send: a client that stops
            # reading (its socket buffer full) is cut after idle_s instead of holding the upstream.
            async with asyncio.timeout(None) as guard:
                while True:
                    if chunk:
                        events = splitter.feed(chunk)
                        out, why = self._forwardable(events, seen, rewriter)
                        if out:
                            guard.reschedule(loop.time() + min(plan.idle_s, max(0.0, plan.deadline - time.monotonic())))
                            sending = True
                            await self.send({"type": "http.response.body", "body": out, "more_body": True})
                            sending = False
                        if why is not None or seen.done:
                            return why
                    guard.reschedule(loop.time() + min(silence_s, max(0.0, plan.deadline - time.monotonic())))
                    chunk = await stream.readany()
                    if not chunk:
                        break
        except TimeoutError:
            if sending:
                return CLIENT_STALLED
            if seen.complete:  # every choice finished; only the usage event or [DONE] did not come: whole
                seen.done = True
                return None
            if time.monotonic() >= plan.deadline:
                return TIMEOUT
            return STALLED if silence_s < plan.idle_s else IDLE
        except EventTooLarge:
            return TOO_LARGE
        except UpstreamTooLarge:
            return TOO_LARGE
        except (UpstreamClosed, aiohttp.ClientError, OSError, ValueError):
            if seen.complete:
                seen.done = True
                return None
            return STALLED if self.lost else INTERRUPTED
        finally:
            reply.close()
            self.current = None
        if self.lost:
            return STALLED
        if seen.complete:  # every choice finished: whole, even without [DONE]; the client gets its [DONE]
            seen.done = True
            return None
        return INTERRUPTED

    def _forwardable(
        self, events: list[bytes], seen: ChatStream, rewriter: ContinuedEvents | None
    ) -> tuple[bytes, str | None]:
        """The bytes of ``events`` the client gets, and why the stream breaks here (None: it goes on)."""
        parts: list[bytes] = []
        for event in events:
            if seen.done:
                break
            data = event_data(event)
            if data is None:  # a comment (kept: a keep-alive), or id:/retry:/event: alone (OpenAI clients
                if rewriter is None and event.startswith(b":"):  # read every event's data as JSON: left out)
                    parts.append(event)
                continue
            if data == DONE:
                seen.done = True
                break
            payload = parse_json_event(data)
            if payload is None:
                return b"".join(parts), MALFORMED
            if "error" in payload and not payload.get("choices"):
                return b"".join(parts), UPSTREAM_ERROR
            renamed = rename_reasoning(payload)  # vLLM's `reasoning` reaches clients as `reasoning_content`
            seen.update(payload)
            if rewriter is not None:
                rewritten = rewriter.rewrite(payload)
                if rewritten is not None:
                    parts.append(encode_event(rewritten))
            elif not (payload.get("choices") == [] and "usage" in payload and not self.plan.client_wants_usage):
                parts.append(encode_event(payload) if renamed else event)
        return b"".join(parts), None

    async def _end(self, last: bytes | None = None) -> None:
        """Close the client's stream: ``[DONE]`` after a whole answer, or one error event and ``[DONE]`` (as
        the model server and vLLM end theirs: a client reading to ``[DONE]`` is not left waiting)."""
        body = DONE_EVENT if last is None else last + DONE_EVENT
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    def _close(self) -> None:
        if self.current is not None:
            self.current.close()
