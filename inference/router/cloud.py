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
from inference.router.proxy import (
    FIRST_BYTE_TIMEOUT,
    RESPONSE_TIMEOUT,
    AttemptFailed,
    Reply,
    bounded_cloud,
)


class CloudRoute:
    def __init__(self, config: CloudConfig, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.config = config
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
            timeout=aiohttp.ClientTimeout(total=None, connect=self.config.connect_timeout_s,
                                          sock_connect=self.config.connect_timeout_s),
            # HTTPS_PROXY / NO_PROXY for sites that reach the internet through a proxy (never for loopback)
            trust_env=not is_loopback(urlsplit(self.base).hostname or ""),
        )

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    def model_for(self, local_model: str | None) -> str | None:
        return self.config.cloud_model(local_model)

    async def send(self, path: str, data: dict[str, Any], cloud_model: str, stream: bool,
                   deadline: float) -> tuple[Reply, int]:
        """Send to the cloud with retries; return (reply, attempts) or raise the last AttemptFailed."""
        assert self.session is not None
        body = json.dumps({**data, "model": cloud_model}, separators=(",", ":"), ensure_ascii=False).encode()
        url = self.base + path
        cfg = self.config
        last: AttemptFailed | None = None
        for attempt in range(cfg.attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            limit = min(cfg.first_byte_timeout_s, remaining) if stream else remaining
            try:
                reply = await bounded_cloud(self.session, url, body, self._headers, stream, limit,
                                            FIRST_BYTE_TIMEOUT if stream else RESPONSE_TIMEOUT)
                return reply, attempt + 1
            except AttemptFailed as failure:
                last = failure
                last.attempts = attempt + 1
            if asks_too_long(last.retry_after, cfg.backoff_max_s):
                break  # the API asks for a longer wait than ours: its 429 and Retry-After go to the client
            if attempt + 1 < cfg.attempts:
                delay = backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s, last.retry_after)
                if time.monotonic() + delay >= deadline:
                    break
                await self._sleep(delay)
        assert last is not None or deadline <= time.monotonic()
        raise last or AttemptFailed(RESPONSE_TIMEOUT)
