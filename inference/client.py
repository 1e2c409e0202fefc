"""A retrying client for the DeepSeek API and for the dsdeploy router (both speak the OpenAI protocol).

Retries connection errors, timeouts, 408, 409, 429 and 5xx with exponential backoff and full jitter,
capped at 10 s by default, and honours ``Retry-After`` (a server asking for longer than the cap is not retried:
its error is raised at once, with ``retry_after`` set). Other 4xx answers raise at once. Streams are
retried only until their first event has arrived.

    from inference.client import ChatClient
    client = ChatClient("http://127.0.0.1:8080", api_key=os.environ["ROUTER_KEY"], data_class="public")
    answer = client.chat([{"role": "user", "content": "hello"}], model="deepseek-chat")
    print(answer["choices"][0]["message"]["content"], client.last_route)

The official ``openai`` package works as well (see docs/router.md); this client exists for scripts
that want the router's headers and these retry rules without it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from inference.router.backoff import asks_too_long, backoff_delay, parse_retry_after
from inference.router.config import DATA_CLASSES

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class ApiError(Exception):
    """An error answer (OpenAI shape) or a transport failure; ``retryable`` tells whether it was retried."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message if status is None else f"{status}: {message}")
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.request_id = request_id

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRY_STATUSES


def _error_from(resp: httpx.Response) -> ApiError:
    try:
        err = resp.json().get("error") or {}
        message, code = str(err.get("message") or resp.reason_phrase), err.get("code")
    except (ValueError, AttributeError):
        message, code = resp.text[:200] or resp.reason_phrase, None
    return ApiError(
        message,
        status=resp.status_code,
        code=code,
        retry_after=parse_retry_after(resp.headers.get("retry-after")),
        request_id=resp.headers.get("x-dsdeploy-request-id"),
    )


class ChatClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        data_class: str | None = None,
        max_attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 10.0,
        timeout_s: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"url {base_url!r} must start with http:// or https://")
        if data_class is not None and data_class not in DATA_CLASSES:
            raise ValueError(f"data class {data_class!r} is not one of {', '.join(DATA_CLASSES)}")
        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if data_class:
            headers["X-Data-Class"] = data_class
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0), transport=transport)
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._sleep = sleep
        self.last_route: str | None = None
        self.last_request_id: str | None = None
        self.last_status: int | None = None
        self.attempts = 0  # attempts made by the last call

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = exc.retry_after if isinstance(exc, ApiError) else None
        return backoff_delay(state.attempt_number - 1, self.backoff_base_s, self.backoff_max_s, retry_after)

    def _retrying(self) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            sleep=self._sleep,
            reraise=True,
            retry=retry_if_exception(
                lambda e: (
                    isinstance(e, ApiError) and e.retryable and not asks_too_long(e.retry_after, self.backoff_max_s)
                )
            ),
        )

    def _send_once(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        self.attempts += 1
        try:
            resp = self._http.request(method, self.base_url + path, json=payload)
        except httpx.TransportError as exc:
            raise ApiError(f"{self.base_url}{path}: {type(exc).__name__}: {exc}") from None
        self._note(resp)
        if resp.status_code != 200:
            raise _error_from(resp)
        try:
            return resp.json()
        except ValueError:
            raise ApiError("the answer is not JSON", status=502) from None

    def _note(self, resp: httpx.Response) -> None:
        self.last_status = resp.status_code
        self.last_route = resp.headers.get("x-dsdeploy-route")
        self.last_request_id = resp.headers.get("x-dsdeploy-request-id")

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON body to ``/v1{path}`` with retries; return the JSON answer."""
        self.attempts = 0
        return self._retrying()(self._send_once, "POST", path, payload)

    def models(self) -> list[str]:
        """The model ids ``GET /v1/models`` lists (with retries)."""
        self.attempts = 0
        body = self._retrying()(self._send_once, "GET", "/models", None)
        return [m["id"] for m in body.get("data", []) if isinstance(m, dict) and "id" in m]

    def chat(self, messages: list[dict[str, Any]], model: str = "deepseek-chat", **params: Any) -> dict[str, Any]:
        return self.post("/chat/completions", {"model": model, "messages": messages, **params, "stream": False})

    def completion(self, prompt: str, model: str = "deepseek-chat", **params: Any) -> dict[str, Any]:
        return self.post("/completions", {"model": model, "prompt": prompt, **params, "stream": False})

    def stream_chat(
        self, messages: list[dict[str, Any]], model: str = "deepseek-chat", **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield the stream's chunks; retried until the first event, an error event after it raises."""
        payload = {"model": model, "messages": messages, **params, "stream": True}
        self.attempts = 0
        resp, lines = self._retrying()(self._open_stream, payload)
        try:
            for line in lines:
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if isinstance(event, dict) and event.get("error"):
                    err = event["error"]
                    raise ApiError(str(err.get("message")), status=502, code=err.get("code"))
                yield event
            raise ApiError("the stream ended before [DONE]", status=502, code="stream_interrupted")
        finally:
            resp.close()

    def _open_stream(self, payload: dict[str, Any]) -> tuple[httpx.Response, Iterator[str]]:
        self.attempts += 1
        try:
            resp = self._http.send(
                self._http.build_request("POST", self.base_url + "/chat/completions", json=payload), stream=True
            )
        except httpx.TransportError as exc:
            raise ApiError(f"{self.base_url}: {type(exc).__name__}: {exc}") from None
        self._note(resp)
        if resp.status_code != 200:
            resp.read()
            resp.close()
            raise _error_from(resp)
        lines = resp.iter_lines()
        try:
            first = next(line for line in lines if line.strip())
        except (StopIteration, httpx.TransportError):
            resp.close()
            raise ApiError("the stream ended before its first event") from None

        def rest() -> Iterator[str]:
            yield first
            yield from lines

        return resp, rest()


def delta_of(chunk: dict[str, Any]) -> tuple[str, str, str | None]:
    """(content, reasoning_content, finish_reason) of one streamed chat chunk, all choices joined."""
    content, reasoning, finish = "", "", None
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        content += delta.get("content") or ""
        reasoning += delta.get("reasoning_content") or ""
        finish = choice.get("finish_reason") or finish
    return content, reasoning, finish
