"""One HTTP exchange with an upstream (local or cloud), up to the first byte that may reach the client.

Nothing here sends anything to the client, so any failure raised is safe to retry elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from inference.router.backoff import parse_retry_after

# Failure reasons (also the fallback reasons in metrics and audit).
CONNECT_REFUSED = "connect_refused"
CONNECT_ERROR = "connect_error"
RESET = "connection_reset"
FIRST_BYTE_TIMEOUT = "first_byte_timeout"
RESPONSE_TIMEOUT = "response_timeout"
UPSTREAM_5XX = "upstream_5xx"
UPSTREAM_429 = "upstream_429"
MALFORMED = "malformed_response"
UNRESPONSIVE = "unresponsive"


class AttemptFailed(Exception):
    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason if status is None else f"{reason} ({status})")
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.attempts = 1


@dataclass(slots=True)
class Reply:
    """What an upstream answered: a whole body, or (stream) its first chunk and the open response."""

    status: int
    content_type: str
    body: bytes | None = None
    parsed: dict[str, Any] | None = None  # JSON of a 200 non-streamed body
    first_chunk: bytes | None = None
    response: aiohttp.ClientResponse | None = None
    retry_after: str | None = None

    def close(self) -> None:
        if self.response is not None:
            self.response.close()
            self.response = None


def _connect_failure(exc: aiohttp.ClientConnectorError) -> AttemptFailed:
    refused = getattr(exc, "os_error", None)
    if isinstance(refused, ConnectionRefusedError) or getattr(refused, "errno", None) == errno.ECONNREFUSED:
        return AttemptFailed(CONNECT_REFUSED)
    return AttemptFailed(CONNECT_ERROR)


async def exchange(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                   stream: bool) -> Reply:
    """POST and read up to the first client-visible byte; raise AttemptFailed for retryable outcomes.

    A 4xx other than 429 is a Reply (it goes back to the client unchanged).
    """
    try:
        resp = await session.post(url, data=body, headers=headers)
    except aiohttp.ClientConnectorError as exc:
        raise _connect_failure(exc) from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise AttemptFailed(CONNECT_ERROR) from None
    except (aiohttp.ClientError, OSError):
        raise AttemptFailed(RESET) from None
    try:
        status = resp.status
        ctype = resp.headers.get("Content-Type", "application/json")
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            resp.close()
            raise AttemptFailed(UPSTREAM_429 if status == 429 else UPSTREAM_5XX, status=status, retry_after=retry_after)
        if status != 200 or not stream:
            data = await resp.read()
            resp.release()
            parsed = None
            if status == 200:
                try:
                    parsed = json.loads(data)
                except ValueError:
                    raise AttemptFailed(MALFORMED) from None
                if not isinstance(parsed, dict):
                    raise AttemptFailed(MALFORMED)
            return Reply(status, ctype, body=data, parsed=parsed, retry_after=resp.headers.get("Retry-After"))
        first = await resp.content.readany()
        if not first:
            raise AttemptFailed(RESET)
        if not (first.startswith(b"data:") or first.startswith(b":") or first.startswith(b"event:")):
            raise AttemptFailed(MALFORMED)
        return Reply(200, ctype, first_chunk=first, response=resp)
    except AttemptFailed:
        resp.close()
        raise
    except (TimeoutError, aiohttp.ClientError, OSError):
        resp.close()
        raise AttemptFailed(RESET) from None
    except BaseException:
        resp.close()
        raise


def _close_late_reply(task: asyncio.Task[Reply]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()


async def bounded_exchange(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                           stream: bool, timeout: float, timeout_reason: str,
                           abort: asyncio.Future[str] | None = None) -> Reply:
    """``exchange`` limited by ``timeout`` and cancelled early when ``abort`` resolves (frozen upstream)."""
    task = asyncio.ensure_future(exchange(session, url, body, headers, stream))
    waiters: tuple[asyncio.Future[Any], ...] = (task,) if abort is None else (task, abort)
    done, _ = await asyncio.wait(waiters, timeout=max(0.001, timeout), return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        return task.result()
    task.cancel()
    task.add_done_callback(_safe_close)
    if abort is not None and abort in done:
        raise AttemptFailed(UNRESPONSIVE)
    raise AttemptFailed(timeout_reason)


def _safe_close(task: asyncio.Task[Reply]) -> None:
    with contextlib.suppress(BaseException):
        _close_late_reply(task)
