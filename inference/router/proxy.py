"""One HTTP exchange with an upstream (local or cloud), up to the first byte that may reach the client.

Nothing here sends anything to the client, so any failure raised is safe to retry elsewhere.
Local upstreams go through the lean keep-alive client (``upstream_http``); the cloud through aiohttp.
"""

from __future__ import annotations

import asyncio
import errno
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from pydantic_core import from_json

from inference.router.backoff import parse_retry_after

# Failure reasons (also the fallback reasons in metrics and audit), declared in reasons.py; named here too,
# where the attempts that fail with them are.
from inference.router.reasons import (  # noqa: F401
    CONNECT_ERROR,
    CONNECT_REFUSED,
    CONTEXT_LENGTH,
    FIRST_BYTE_TIMEOUT,
    LOCAL_KEY_REJECTED,
    MALFORMED,
    REDIRECT,
    RESET,
    RESPONSE_TIMEOUT,
    TOO_LARGE,
    UNRESPONSIVE,
    UPSTREAM_5XX,
    UPSTREAM_429,
    UPSTREAM_DRAINING,
)
from inference.router.sse import DONE, SseSplitter, event_data, looks_like_sse, parse_json_event
from inference.router.upstream_http import UpstreamClosed, UpstreamMalformed, UpstreamTooLarge

if TYPE_CHECKING:
    from inference.router.pool import LocalUpstream


class AttemptFailed(Exception):
    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason if status is None else f"{reason} ({status})")
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.attempts = 1


class BodyStream(Protocol):
    async def readany(self) -> bytes: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class Reply:
    """What an upstream answered: a whole body, or (stream) its first chunk and the rest to read."""

    status: int
    content_type: str
    body: bytes | None = None

    first_chunk: bytes | None = None
    stream: BodyStream | None = None
    retry_after: float | None = None  # seconds, from a readable Retry-After
    usage: dict[str, Any] | None = None  # of a whole 200 answer
    resent: bool = False  # the local client sent it twice (a reused connection closed under it)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


# What engines answer a new request while they drain after SIGTERM (they finish the open ones):
# - dsdeploy serve: 503 with code "shutting_down" (inference/server/api/app.py);
# - vLLM 0.32 started with --shutdown-timeout (as the chart starts it): 500 "cannot schedule new futures after
#   shutdown" for as long as it drains, while its /health stays 200 (measured with the pinned CPU build;
#   tests/vllm/test_vllm_e2e.py runs it), so the router learns of the drain from this answer alone.
DRAINING_CODES = frozenset({"shutting_down"})
DRAINING_MESSAGES = ("cannot schedule new futures after shutdown",)
MAX_ERROR_BYTES = 65536  # an error answer longer than this is not read for what it says


def _small_json_object(data: bytes) -> dict[str, Any] | None:
    """An error answer's JSON object, or None (longer than MAX_ERROR_BYTES, not JSON, not an object)."""
    if len(data) > MAX_ERROR_BYTES:
        return None
    try:
        answer = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return answer if isinstance(answer, dict) else None


def is_draining_answer(status: int, data: bytes) -> bool:
    """A 5xx whose OpenAI-shaped error says the engine is shutting down (DRAINING_CODES, DRAINING_MESSAGES)."""
    answer = _small_json_object(data) if status >= 500 else None
    error = answer.get("error") if answer is not None else None
    if not isinstance(error, dict):
        return False
    message = error.get("message")
    return error.get("code") in DRAINING_CODES or (
        isinstance(message, str) and any(m in message for m in DRAINING_MESSAGES)
    )


def _fail_on_status(status: int, retry_after: str | None) -> None:
    if status == 429 or status >= 500:
        raise AttemptFailed(
            UPSTREAM_429 if status == 429 else UPSTREAM_5XX, status=status, retry_after=parse_retry_after(retry_after)
        )


def answer_usage(data: bytes) -> dict[str, Any] | None:
    """The ``usage`` object of a whole JSON answer (None when it has none).

    Raises AttemptFailed(MALFORMED) when the body is not a JSON object (truncated, HTML, garbage, or
    shaped ``{...}`` without being JSON): such an answer is never passed on, nor cached.
    """
    try:
        answer = from_json(data)  # pydantic-core's parser: about half json.loads' time on a short answer
    except ValueError:
        raise AttemptFailed(MALFORMED) from None
    if not isinstance(answer, dict):
        raise AttemptFailed(MALFORMED)
    usage = answer.get("usage")
    return usage if isinstance(usage, dict) else None


def is_context_length_error(status: int, data: bytes) -> bool:
    """A 400 saying the prompt (with max_tokens) does not fit the engine's context: vLLM's BadRequestError
    ("This model's maximum context length is ...") or an OpenAI-style ``context_length_exceeded`` code."""
    answer = _small_json_object(data) if status == 400 else None
    error = answer.get("error", answer) if answer is not None else None
    if not isinstance(error, dict):
        return False
    message = error.get("message")
    text = message.lower() if isinstance(message, str) else ""
    return error.get("code") == CONTEXT_LENGTH or "maximum context length" in text


def media_type(value: str | bytes | None, default: str = "application/json") -> str:
    """An upstream's Content-Type if it is printable ASCII of a sane length, else ``default``."""
    if value is None:
        return default
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if len(value) > 200 or not value.isascii() or not value.isprintable():
        return default
    return value


def _whole(status: int, ctype: str, data: bytes, retry_after: str | None) -> Reply:
    usage = answer_usage(data) if status == 200 else None
    return Reply(status, ctype, body=data, retry_after=parse_retry_after(retry_after), usage=usage)


def _check_first(first: bytes, limit: int) -> None:
    """A stream's first chunk must be an event stream, and its first whole event (if any) JSON or [DONE]."""
    if not first:
        raise AttemptFailed(RESET)
    if not looks_like_sse(first):
        raise AttemptFailed(MALFORMED)
    try:
        events = SseSplitter(limit).feed(first)
    except ValueError:
        raise AttemptFailed(TOO_LARGE) from None
    for event in events:
        data = event_data(event)
        if data is not None:
            if data != DONE and parse_json_event(data) is None:
                raise AttemptFailed(MALFORMED)
            return


async def bounded_local(up: LocalUpstream, raw: bytes, stream: bool, timeout: float, timeout_reason: str) -> Reply:
    """Send a prepared request to a local upstream within ``timeout``; a 4xx other than 429 is a Reply
    (passed through). Ended early when the upstream is found unresponsive.

    No timer per request: the health monitor's deadline sweep (every 50 ms) and its probes cancel
    the waiting task, and the reason they leave in ``up.aborted`` turns into an AttemptFailed.
    """
    task = asyncio.current_task()
    assert task is not None
    up.pending[task] = (time.monotonic() + timeout, timeout_reason)
    try:
        try:
            resp = await up.client.request(raw)
        except ConnectionRefusedError:
            raise AttemptFailed(CONNECT_REFUSED) from None
        except UpstreamMalformed:
            raise AttemptFailed(MALFORMED) from None
        except UpstreamClosed:
            raise AttemptFailed(RESET) from None
        except UpstreamTooLarge:
            raise AttemptFailed(TOO_LARGE) from None
        except (OSError, TimeoutError) as exc:
            refused = getattr(exc, "errno", None) == errno.ECONNREFUSED
            raise AttemptFailed(CONNECT_REFUSED if refused else CONNECT_ERROR) from None
        try:
            status = resp.status
            headers = resp.headers
            ctype = media_type(headers.get(b"content-type"))
            raw_retry_after = headers.get(b"retry-after")
            retry_after = raw_retry_after.decode("latin-1") if raw_retry_after is not None else None
            if status >= 500:
                data = await resp.read()  # bounded by the client (limits.max_answer_bytes) and the deadlines
                resp.close()
                if is_draining_answer(status, data):
                    raise AttemptFailed(UPSTREAM_DRAINING, status=status)
            _fail_on_status(status, retry_after)
            if status in (401, 403):
                raise AttemptFailed(LOCAL_KEY_REJECTED, status=status)
            if status != 200 or not stream:
                data = await resp.read()
                resp.close()
                reply = _whole(status, ctype, data, retry_after)
                reply.resent = resp.resent
                return reply
            first = await resp.readany()
            _check_first(first, up.client.max_body_bytes)
            return Reply(200, ctype, first_chunk=first, stream=resp, resent=resp.resent)
        except UpstreamMalformed:
            resp.close()
            raise AttemptFailed(MALFORMED) from None
        except UpstreamTooLarge:
            resp.close()
            raise AttemptFailed(TOO_LARGE) from None
        except (UpstreamClosed, OSError):
            resp.close()
            raise AttemptFailed(RESET) from None
        except BaseException:
            resp.close()
            raise
    except asyncio.CancelledError:
        reason = up.aborted.pop(task, None)
        if reason is not None:  # cancelled by the router's monitor, not by anyone else
            task.uncancel()
            raise AttemptFailed(reason) from None
        raise
    finally:
        up.pending.pop(task, None)
        up.aborted.pop(task, None)


class _AiohttpStream:
    __slots__ = ("_resp", "_left")

    def __init__(self, resp: aiohttp.ClientResponse, max_bytes: int) -> None:
        self._resp = resp
        self._left = max_bytes

    async def readany(self) -> bytes:
        chunk = await self._resp.content.readany()
        self._left -= len(chunk)
        if self._left < 0:
            raise UpstreamTooLarge("the cloud's stream is larger than limits.max_answer_bytes")
        return chunk

    def close(self) -> None:
        self._resp.close()


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    length = resp.content_length
    if length is not None and length > limit:
        raise AttemptFailed(TOO_LARGE)
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await resp.content.readany()
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            raise AttemptFailed(TOO_LARGE)
        parts.append(chunk)


async def exchange_cloud(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], stream: bool, max_bytes: int
) -> Reply:
    """POST to the cloud API and read up to the first client-visible byte (redirects are not followed:
    the key would go wherever a redirect points)."""
    try:
        resp = await session.post(url, data=body, headers=headers, allow_redirects=False)
    except aiohttp.ClientConnectorError as exc:
        refused = isinstance(getattr(exc, "os_error", None), ConnectionRefusedError)
        raise AttemptFailed(CONNECT_REFUSED if refused else CONNECT_ERROR) from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise AttemptFailed(CONNECT_ERROR) from None
    except (aiohttp.ClientError, OSError):
        raise AttemptFailed(RESET) from None
    try:
        status = resp.status
        ctype = media_type(resp.headers.get("Content-Type"))
        retry_after = resp.headers.get("Retry-After")
        if 300 <= status < 400:
            raise AttemptFailed(REDIRECT, status=status)
        _fail_on_status(status, retry_after)
        if status != 200 or not stream:
            data = await _read_bounded(resp, max_bytes)
            resp.release()
            return _whole(status, ctype, data, retry_after)
        first = await resp.content.readany()
        _check_first(first, max_bytes)
        return Reply(200, ctype, first_chunk=first, stream=_AiohttpStream(resp, max_bytes))
    except (aiohttp.ClientError, OSError):
        resp.close()
        raise AttemptFailed(RESET) from None
    except BaseException:
        resp.close()
        raise


async def bounded_cloud(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    stream: bool,
    timeout: float,
    timeout_reason: str,
    max_bytes: int,
) -> Reply:
    try:
        async with asyncio.timeout(max(0.001, timeout)):
            return await exchange_cloud(session, url, body, headers, stream, max_bytes)
    except TimeoutError:
        raise AttemptFailed(timeout_reason) from None
