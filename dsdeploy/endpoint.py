"""A small synchronous client for any OpenAI-compatible endpoint (our router, our server, vLLM).

Used by the operator commands `dsdeploy chat` and `dsdeploy smoke`; it needs only httpx, which the
router image carries, so both commands run inside the router container (the chart's `helm test` hook).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

DATA_CLASSES = ("public", "internal", "restricted")


class EndpointError(RuntimeError):
    """The endpoint answered with an error or could not be reached; the message is safe to print."""


@dataclass
class StreamEvent:
    """One server-sent chunk of a streamed chat completion (already decoded from JSON)."""

    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: dict | None = None
    error: str | None = None


@dataclass
class ResponseMeta:
    status: int
    route: str | None
    request_id: str | None
    first_byte_s: float | None = None
    total_s: float = 0.0
    extra: dict = field(default_factory=dict)


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        message = error.get("message") if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        message = response.text[:200]
    return f"HTTP {response.status_code}: {message}"


class Endpoint:
    """An OpenAI-compatible base URL (without /v1) with optional key and data class."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        data_class: str | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        if data_class is not None and data_class not in DATA_CLASSES:
            raise ValueError(f"data class {data_class!r} is not one of {', '.join(DATA_CLASSES)}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url {url!r} must start with http:// or https://")
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if data_class:
            headers["X-Data-Class"] = data_class
        self.base_url = url.rstrip("/").removesuffix("/v1")
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=5.0)
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _meta(self, response: httpx.Response, started: float) -> ResponseMeta:
        return ResponseMeta(
            status=response.status_code,
            route=response.headers.get("x-dsdeploy-route"),
            request_id=response.headers.get("x-dsdeploy-request-id"),
            total_s=time.perf_counter() - started,
        )

    def _request(self, method: str, path: str, **kwargs: object) -> tuple[dict, ResponseMeta]:
        started = time.perf_counter()
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise EndpointError(f"{self.base_url}{path}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise EndpointError(_error_message(response))
        try:
            body = response.json()
        except ValueError:
            raise EndpointError(f"{path}: answer is not JSON: {response.text[:200]!r}") from None
        return body, self._meta(response, started)

    def models(self) -> tuple[list[str], ResponseMeta]:
        body, meta = self._request("GET", "/v1/models")
        return [m["id"] for m in body.get("data", []) if isinstance(m, dict) and "id" in m], meta

    def chat(self, body: dict) -> tuple[dict, ResponseMeta]:
        return self._request("POST", "/v1/chat/completions", json={**body, "stream": False})

    def stream_chat(self, body: dict, meta_out: list[ResponseMeta]) -> Iterator[StreamEvent]:
        """Yield events as they arrive; appends the response metadata to ``meta_out`` once known."""
        started = time.perf_counter()
        payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
        try:
            with self._client.stream("POST", "/v1/chat/completions", json=payload) as response:
                if response.status_code >= 400:
                    response.read()
                    raise EndpointError(_error_message(response))
                meta = self._meta(response, started)
                meta_out.append(meta)
                done = False
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if meta.first_byte_s is None:
                        meta.first_byte_s = time.perf_counter() - started
                    if data == "[DONE]":
                        done = True
                        break
                    yield _decode_chunk(data)
                meta.total_s = time.perf_counter() - started
                if not done:
                    raise EndpointError("stream ended without data: [DONE]")
        except httpx.HTTPError as exc:
            raise EndpointError(f"{self.base_url}: stream failed: {type(exc).__name__}: {exc}") from None


def _decode_chunk(data: str) -> StreamEvent:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise EndpointError(f"stream chunk is not JSON: {data[:200]!r}") from None
    if "error" in chunk:
        error = chunk["error"]
        return StreamEvent(error=error.get("message", str(error)) if isinstance(error, dict) else str(error))
    event = StreamEvent(usage=chunk.get("usage"))
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        event.content += delta.get("content") or ""
        event.reasoning += delta.get("reasoning_content") or ""
        event.finish_reason = choice.get("finish_reason") or event.finish_reason
    return event
