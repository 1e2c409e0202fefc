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

from inference.router.backoff import parse_retry_after
from inference.router.upstream_http import UpstreamClosed, UpstreamMalformed

if TYPE_CHECKING:
    from inference.router.pool import LocalUpstream

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
# A local engine refused the router's own key (upstreams[].api_key): clients' keys never go to engines,
# so passing its 401 on would tell the client that its key is wrong.
LOCAL_KEY_REJECTED = "local_key_rejected"


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
    retry_after: str | None = None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


def _fail_on_status(status: int, retry_after: str | None) -> None:
    if status == 429 or status >= 500:
        raise AttemptFailed(UPSTREAM_429 if status == 429 else UPSTREAM_5XX, status=status,
                            retry_after=parse_retry_after(retry_after))


_DECODER = json.JSONDecoder()


def answer_usage(data: bytes) -> dict[str, Any] | None:
    """The ``usage`` object of a JSON answer, read without parsing the whole answer.

    Raises AttemptFailed(MALFORMED) when the body is not a JSON object (truncated, HTML, garbage).
    A quoted ``"usage"`` cannot occur inside a JSON string (its quotes would be escaped), so the
    last one is the key.
    """
    check_json_object(data)
    body = data.strip()
    i = body.rfind(b'"usage"')
    if i < 0:
        return None
    j = body.find(b"{", i + 7)
    if j < 0 or body[i + 7:j].strip(b" \t\r\n:"):
        return None  # "usage": null
    try:
        usage, _ = _DECODER.raw_decode(body[j:].decode("utf-8", "replace"))
    except ValueError:
        raise AttemptFailed(MALFORMED) from None
    return usage if isinstance(usage, dict) else None


def check_json_object(data: bytes) -> None:
    """Cheap shape check of a 200 answer before it may reach the client (else: try elsewhere)."""
    if not (data[:1] == b"{" and data[-1:] == b"}"):
        body = data.strip()
        if not (body.startswith(b"{") and body.endswith(b"}")):
            raise AttemptFailed(MALFORMED)


def _whole(status: int, ctype: str, data: bytes, retry_after: str | None) -> Reply:
    if status == 200:
        check_json_object(data)  # the usage is read after the answer went out (answer_usage)
    return Reply(status, ctype, body=data, retry_after=retry_after)


def _check_first(first: bytes) -> None:
    if not first:
        raise AttemptFailed(RESET)
    if not (first.startswith(b"data:") or first.startswith(b":") or first.startswith(b"event:")):
        raise AttemptFailed(MALFORMED)


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
        except (OSError, TimeoutError) as exc:
            refused = getattr(exc, "errno", None) == errno.ECONNREFUSED
            raise AttemptFailed(CONNECT_REFUSED if refused else CONNECT_ERROR) from None
        try:
            status = resp.status
            headers = resp.headers
            ctype = headers.get(b"content-type")
            ctype = ctype.decode("latin-1") if ctype else "application/json"
            retry_after = headers.get(b"retry-after")
            if retry_after is not None:
                retry_after = retry_after.decode("latin-1")
            _fail_on_status(status, retry_after)
            if status in (401, 403):
                raise AttemptFailed(LOCAL_KEY_REJECTED, status=status)
            if status != 200 or not stream:
                data = await resp.read()
                resp.close()
                return _whole(status, ctype, data, retry_after)
            first = await resp.readany()
            _check_first(first)
            return Reply(200, ctype, first_chunk=first, stream=resp)
        except UpstreamMalformed:
            resp.close()
            raise AttemptFailed(MALFORMED) from None
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
    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    async def readany(self) -> bytes:
        return await self._resp.content.readany()

    def close(self) -> None:
        self._resp.close()


async def exchange_cloud(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                         stream: bool) -> Reply:
    """POST to the cloud API and read up to the first client-visible byte."""
    try:
        resp = await session.post(url, data=body, headers=headers)
    except aiohttp.ClientConnectorError as exc:
        refused = isinstance(getattr(exc, "os_error", None), ConnectionRefusedError)
        raise AttemptFailed(CONNECT_REFUSED if refused else CONNECT_ERROR) from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise AttemptFailed(CONNECT_ERROR) from None
    except (aiohttp.ClientError, OSError):
        raise AttemptFailed(RESET) from None
    try:
        status = resp.status
        ctype = resp.headers.get("Content-Type", "application/json")
        _fail_on_status(status, resp.headers.get("Retry-After"))
        if status != 200 or not stream:
            data = await resp.read()
            resp.release()
            return _whole(status, ctype, data, resp.headers.get("Retry-After"))
        first = await resp.content.readany()
        _check_first(first)
        return Reply(200, ctype, first_chunk=first, stream=_AiohttpStream(resp))
    except (aiohttp.ClientError, OSError):
        resp.close()
        raise AttemptFailed(RESET) from None
    except BaseException:
        resp.close()
        raise


async def bounded_cloud(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                        stream: bool, timeout: float, timeout_reason: str) -> Reply:
    try:
        async with asyncio.timeout(max(0.001, timeout)):
            return await exchange_cloud(session, url, body, headers, stream)
    except TimeoutError:
        raise AttemptFailed(timeout_reason) from None
