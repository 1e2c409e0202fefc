"""A small load generator for the benchmarks: raw asyncio + the httptools parser, keep-alive,
one request in flight per connection, so the generator costs ~20-60 us per request and is not
the bottleneck it would be with a full HTTP client."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.headers: dict[bytes, bytes] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):  # noqa: ANN001
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), self.headers))

    def connection_lost(self, exc):  # noqa: ANN001
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))


async def _connect(port: int) -> _Conn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(_Conn, "127.0.0.1", port)
    return proto


def request_bytes(port: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q * len(s)))] * 1000.0 if s else float("nan")


async def worker(
    port: int, payload: bytes, stop_at: float, result: LoadResult, record: bool, routes: list | None = None
) -> None:
    conn = await _connect(port)
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    while clock() < stop_at:
        conn.headers = {}
        conn.waiter = loop.create_future()
        started = clock()
        conn.transport.write(payload)
        try:
            status, headers = await conn.waiter
        except ConnectionError:
            result.errors += 1
            conn = await _connect(port)
            continue
        ended = clock()
        if status != 200:
            result.errors += 1
        elif record:
            result.latencies.append(ended - started)
        if routes is not None:
            routes.append((time.monotonic(), status, headers.get(b"x-dsdeploy-route", b"").decode()))
    conn.transport.close()


async def run_load(
    port: int, body: bytes, headers: dict[str, str], concurrency: int, seconds: float, warmup: float
) -> LoadResult:
    payload = request_bytes(port, body, headers)
    warm = LoadResult()
    await asyncio.gather(
        *(worker(port, payload, time.perf_counter() + warmup, warm, False) for _ in range(concurrency))
    )
    result = LoadResult()
    started = time.perf_counter()
    await asyncio.gather(*(worker(port, payload, started + seconds, result, True) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    result.errors += warm.errors
    return result
