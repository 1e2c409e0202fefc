"""The cloud route (DeepSeek API): model mapping, retries with full-jitter backoff and Retry-After."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from inference.router.backoff import asks_too_long, backoff_delay
from inference.router.config import CloudConfig, is_loopback
from inference.router.continuation import ChatStream, prefix_completion_body
from inference.router.proxy import (
    FIRST_BYTE_TIMEOUT,
    REDIRECT,
    RESPONSE_TIMEOUT,
    AttemptFailed,
    Reply,
    bounded_cloud,
)


def stream_with_usage(data: dict[str, Any]) -> dict[str, Any]:
    """A streamed request that asks for the final usage event (the router counts tokens and spend from it;
    the relay leaves that event out when the client did not ask for it)."""
    options = data.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return data
    return {**data, "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True}}


class CloudRoute:
    def __init__(
        self, config: CloudConfig, max_answer_bytes: int, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    ) -> None:
        self.config = config
        self.max_answer_bytes = max_answer_bytes
        self.base = config.base_url
        self._headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {config.api_key}",
        }
        self._sleep = sleep
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.config.connect_timeout_s, sock_connect=self.config.connect_timeout_s
            ),
            # HTTPS_PROXY / NO_PROXY for sites that reach the internet through a proxy (never for loopback)
            trust_env=not is_loopback(urlsplit(self.base).hostname or ""),
        )

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    def model_for(self, local_model: str | None) -> str | None:
        return self.config.cloud_model(local_model)

    @property
    def continues_streams(self) -> bool:
        return self.config.prefix_completion_path is not None

    async def send(
        self, path: str, data: dict[str, Any], cloud_model: str, stream: bool, deadline: float
    ) -> tuple[Reply, int]:
        """Send to the cloud with retries; return (reply, attempts) or raise the last AttemptFailed."""
        request = {**data, "model": cloud_model}
        if stream:
            request = stream_with_usage(request)
        body = json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode()
        return await self._send(self.base + path, body, stream, deadline)

    async def continue_stream(
        self, data: dict[str, Any], cloud_model: str, so_far: ChatStream, deadline: float
    ) -> Reply:
        """The rest of a broken chat stream, by chat prefix completion (raises AttemptFailed)."""
        assert self.config.prefix_completion_path is not None
        body = prefix_completion_body(data, cloud_model, so_far)
        reply, _ = await self._send(self.base + self.config.prefix_completion_path, body, True, deadline)
        return reply

    async def _send(self, url: str, body: bytes, stream: bool, deadline: float) -> tuple[Reply, int]:
        assert self.session is not None
        cfg = self.config
        last: AttemptFailed | None = None
        for attempt in range(cfg.attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            limit = min(cfg.first_byte_timeout_s, remaining) if stream else remaining
            try:
                reply = await bounded_cloud(
                    self.session,
                    url,
                    body,
                    self._headers,
                    stream,
                    limit,
                    FIRST_BYTE_TIMEOUT if stream else RESPONSE_TIMEOUT,
                    self.max_answer_bytes,
                )
                return reply, attempt + 1
            except AttemptFailed as failure:
                last = failure
                last.attempts = attempt + 1
            if last.reason == REDIRECT:
                break  # the same answer each time, and never followed: the key would go where it points
            if asks_too_long(last.retry_after, cfg.backoff_max_s):
                break  # the API asks for a longer wait than ours: its 429 and Retry-After go to the client
            if attempt + 1 < cfg.attempts:
                delay = backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s, last.retry_after)
                if time.monotonic() + delay >= deadline:
                    break
                await self._sleep(delay)
        assert last is not None or deadline <= time.monotonic()
        raise last or AttemptFailed(RESPONSE_TIMEOUT)
