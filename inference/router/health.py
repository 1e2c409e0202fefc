"""Active checks of the local pool: liveness probes (frozen upstreams) and vLLM saturation metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from urllib.parse import urlsplit

import aiohttp

from inference.router.body_deadline import BodyDeadlines
from inference.router.circuit import OPEN
from inference.router.config import RouterConfig
from inference.router.engine_metrics import PREFILL_SUM, PROMPT_TOKENS, QUEUE_SUM, TTFT_SUM, WAITING, engine_sums
from inference.router.pool import LocalUpstream, UpstreamPool
from inference.router.proxy import AttemptFailed, answer_usage

DEADLINE_SWEEP_S = 0.05
PROBE_HEADER = "X-Dsdeploy-Probe"  # marks the router's own half-open chat probe


def parse_waiting(sums: dict[str, float]) -> float | None:
    """``vllm:num_requests_waiting`` (summed over models) from ``engine_sums``; None when it is absent."""
    return sums.get(WAITING)


def parse_prefill_rate(sums: dict[str, float]) -> float | None:
    """Prompt tokens prefilled per second over the engine's life, from the vLLM V1 metrics
    (https://docs.vllm.ai/en/latest/design/metrics.html): ``vllm:prompt_tokens_total`` over the sum of
    ``vllm:request_prefill_time_seconds``, or, where that histogram is missing (our server), of the time to
    first token less the queue time. None until enough has been prefilled to tell."""
    tokens = sums.get(PROMPT_TOKENS, 0.0)
    seconds = sums.get(PREFILL_SUM)
    if seconds is None:
        seconds = sums.get(TTFT_SUM, 0.0) - sums.get(QUEUE_SUM, 0.0)
    if tokens < 1000 or seconds <= 0:
        return None
    return tokens / seconds


class HealthMonitor:
    """Probes every upstream every ``health.interval_s``; polls ``/metrics`` for saturation."""

    def __init__(self, config: RouterConfig, pool: UpstreamPool, body_deadlines: BodyDeadlines) -> None:
        self.config = config
        self.pool = pool
        self.body_deadlines = body_deadlines
        self._tasks: list[asyncio.Task[None]] = []
        self._watching: dict[LocalUpstream, list[asyncio.Task[None]]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # Own connection pool, so probes never queue behind request traffic.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0),
            timeout=aiohttp.ClientTimeout(total=self.config.health.timeout_s),
        )
        self._tasks.append(asyncio.create_task(self._deadline_loop(), name="deadlines"))
        for index in self.pool.discovered:
            await self.discover(index)  # members known before the first request
            self._tasks.append(asyncio.create_task(self._discovery_loop(index), name=f"discover {index}"))
        for up in self.pool.upstreams:
            self._watch(up)

    def _watch(self, up: LocalUpstream) -> None:
        if up in self._watching:
            return
        self._watching[up] = [
            asyncio.create_task(self._probe_loop(up), name=f"probe {up.label}"),
            asyncio.create_task(self._metrics_loop(up), name=f"metrics {up.label}"),
        ]

    async def discover(self, index: int) -> None:
        """Resolve a ``discover`` upstream's host; members follow the addresses (kept on DNS errors)."""
        spec = self.config.upstreams[index]
        parts = urlsplit(spec.url)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, parts.port or 80, type=socket.SOCK_STREAM
            )
        except OSError:
            return
        added, removed = self.pool.set_addresses(index, {str(info[4][0]) for info in infos})
        for up in removed:
            for task in self._watching.pop(up, []):
                task.cancel()
        for up in added:
            self._watch(up)

    async def _discovery_loop(self, index: int) -> None:
        interval = self.config.upstreams[index].discover_interval_s
        while True:
            await asyncio.sleep(interval)
            await self.discover(index)

    async def stop(self) -> None:
        tasks = self._tasks + [t for ts in self._watching.values() for t in ts]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._watching.clear()
        if self._session is not None:
            await self._session.close()

    async def probe(self, up: LocalUpstream) -> bool | None:
        """True: ready; None: it answered with a 5xx (draining, loading: alive, takes no new work); False: no
        answer (refused, frozen)."""
        assert self._session is not None
        try:
            async with self._session.get(up.base + self.config.health.path, headers=up.headers) as resp:
                await resp.read()
                return True if resp.status < 500 else None
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def _deadline_loop(self) -> None:
        """First-byte and answer deadlines of local attempts, and body-read deadlines of requests, swept
        every 50 ms (no timer per request)."""
        bodies = self.body_deadlines
        while True:
            await asyncio.sleep(DEADLINE_SWEEP_S)
            now = time.monotonic()
            self.pool.expire_pending(now)
            if bodies.reading:
                bodies.expire(now)

    async def chat_probe(self, up: LocalUpstream) -> bool:
        """One tiny chat completion (1 token): an engine whose /health answers may still fail its chat path
        (loading, a broken GPU), so an open circuit half-opens only when this one succeeds."""
        assert self._session is not None
        request: dict[str, object] = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        model = up.last_model or await self._served_model(up)
        if model is not None:
            request["model"] = model
        headers = {**up.headers, PROBE_HEADER: "half-open"}
        try:
            async with self._session.post(
                up.base + "/v1/chat/completions",
                data=json.dumps(request),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeouts.first_byte_s),
            ) as resp:
                body = await resp.content.read(self.config.limits.max_answer_bytes)
                if resp.status != 200:
                    return False
                answer_usage(body)  # a JSON object, or AttemptFailed
                return True
        except (TimeoutError, aiohttp.ClientError, OSError, AttemptFailed):
            return False

    async def _served_model(self, up: LocalUpstream) -> str | None:
        """The first model an upstream lists (for a chat probe before any request told us its name)."""
        assert self._session is not None
        try:
            async with self._session.get(up.base + "/v1/models", headers=up.headers) as resp:
                listed = json.loads(await resp.content.read(1 << 20)) if resp.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return None
        data = listed.get("data") if isinstance(listed, dict) else None
        first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        return first.get("id") if isinstance(first.get("id"), str) else None

    async def _probe_loop(self, up: LocalUpstream) -> None:
        cfg = self.config.health
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            result = await self.probe(up)
            ok = result is True
            self.pool.probe_result(up, ok, cfg.failures_to_open, cfg.timeout_s, answered=result is None)
            circuit = up.circuit
            if ok and circuit.state == OPEN and time.monotonic() - circuit.opened_at >= circuit.open_s:
                if await self.chat_probe(up):
                    if circuit.probe_succeeded(time.monotonic()):
                        self.pool.turned_ready(up)
                else:
                    circuit.opened_at = time.monotonic()  # still failing: wait open_s before the next chat probe
            await asyncio.sleep(max(0.0, cfg.interval_s - (loop.time() - started) if ok else cfg.interval_s))

    async def _metrics_loop(self, up: LocalUpstream) -> None:
        assert self._session is not None
        cfg = self.config.saturation
        url = up.base + cfg.metrics_path
        while True:
            try:
                async with self._session.get(url, headers=up.headers) as resp:
                    if resp.status == 200:
                        text = (await resp.content.read(4 * 1024 * 1024)).decode("utf-8", "replace")
                        sums = engine_sums(text)
                        up.waiting = parse_waiting(sums) or 0.0
                        up.prefill_rate = parse_prefill_rate(sums) or up.prefill_rate
                        up.latency.observe(sums, time.monotonic(), up.in_flight)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass  # liveness is the probe loop's business
            await asyncio.sleep(cfg.poll_interval_s)
