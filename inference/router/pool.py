"""The local upstream pool: per-upstream state, least-in-flight choice, saturation, circuits."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol
from urllib.parse import urlsplit

from inference.router.circuit import CircuitBreaker
from inference.router.config import RouterConfig, Upstream
from inference.router.latency_target import TtftEstimator

# Why the pool could not give a local upstream (also fallback reasons), declared in reasons.py.
from inference.router.reasons import ALL_CIRCUITS_OPEN, EXHAUSTED, NO_LOCAL, OVER_TTFT_TARGET, SATURATED  # noqa: F401
from inference.router.upstream_http import UpstreamHttpClient
from inference.router.wait_queue import WaitQueue


class StreamWatcher(Protocol):
    def engine_lost(self) -> None: ...


class LocalUpstream:
    """One local OpenAI-compatible server, as the router sees it."""

    __slots__ = (
        "label",
        "base",
        "headers",
        "in_flight",
        "capacity",
        "circuit",
        "waiting",
        "busy_until",
        "prefill_rate",
        "last_model",
        "probe_failures",
        "healthy",
        "starting",
        "client",
        "prefix",
        "raw_headers",
        "pending",
        "aborted",
        "streams",
        "_heads",
        "latency",
    )

    def __init__(self, spec: Upstream, config: RouterConfig, address: str | None = None) -> None:
        """``address``: one resolved address of a ``discover`` upstream (the URL's host is replaced)."""
        parts = urlsplit(spec.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = address or parts.hostname or "127.0.0.1"
        self.label = spec.label if address is None else f"{spec.label}@{address}"
        shown = f"[{host}]" if ":" in host else host
        self.base = spec.url if address is None else f"{parts.scheme}://{shown}:{port}{parts.path}".rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if spec.api_key:
            self.headers["Authorization"] = f"Bearer {spec.api_key}"
        self.prefix = parts.path.rstrip("/")
        self.client = UpstreamHttpClient(
            host,
            port,
            connect_timeout_s=config.timeouts.connect_s,
            tls=parts.scheme == "https",
            max_body_bytes=config.limits.max_answer_bytes,
        )
        self.raw_headers = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()).encode()
        self._heads: dict[str, bytes] = {}  # path -> request line and fixed headers, up to the request id
        # requests waiting for this upstream's first byte -> (deadline, reason if it passes)
        self.pending: dict[asyncio.Task[object], tuple[float, str]] = {}
        self.aborted: dict[asyncio.Task[object], str] = {}  # cancelled by the router, and why
        self.streams: set[StreamWatcher] = set()  # streams being relayed from it (told when it freezes)
        self.in_flight = 0
        self.capacity = spec.max_in_flight or config.saturation.max_in_flight_per_upstream
        self.circuit = CircuitBreaker(config.circuit.failures_to_open, config.circuit.open_s)
        self.waiting = 0.0  # vllm:num_requests_waiting from the last metrics poll
        self.busy_until = 0.0  # it answered 429: saturated until then (monotonic time)
        self.prefill_rate: float | None = None  # prompt tokens per second it prefills (from its metrics)
        self.last_model: str | None = None  # the model of its last answer (the half-open chat probe asks it)
        self.probe_failures = 0
        self.healthy = True  # last active probe answered, and not with a 5xx (draining, loading)
        # unreachable or not ready since its circuit opened (refused, failed probes): it is starting or
        # restarting, not failing its answers; requests that may not leave wait for it (WaitQueue)
        self.starting = False
        self.latency = TtftEstimator()  # its time to first token, from its metrics and the router's counts

    def __repr__(self) -> str:
        return f"LocalUpstream({self.label}, {self.circuit.state}, in_flight={self.in_flight})"

    def saturated(self, max_waiting: int | None) -> bool:
        if self.capacity is not None and self.in_flight >= self.capacity:
            return True
        if self.busy_until and self.busy_until > time.monotonic():
            return True
        return max_waiting is not None and self.waiting > max_waiting

    @property
    def not_ready(self) -> bool:
        """Down or not yet ready: no probe answer (or a 5xx one), or an open circuit since it was unreachable."""
        return not self.healthy or (self.starting and not self.circuit.allows_requests)

    def unreachable(self) -> None:
        """A connection to it was refused or failed: it is (re)starting until its circuit lets requests through."""
        self.healthy = False
        self.starting = True

    def request(self, path: str, body: bytes, request_id: bytes) -> bytes:
        """The raw HTTP request for this upstream (``path`` is one of the router's few POST paths)."""
        head = self._heads.get(path)
        if head is None:
            head = self._heads[path] = b"".join(
                (
                    b"POST ",
                    (self.prefix + path).encode(),
                    b" HTTP/1.1\r\nHost: ",
                    self.client.host_header,
                    b"\r\n",
                    self.raw_headers,
                    b"X-Request-Id: ",
                )
            )
        return b"".join((head, request_id, b"\r\nContent-Length: %d\r\n\r\n" % len(body), body))

    def abort_pending(self, reason: str = "unresponsive") -> None:
        """Cancel the requests still waiting for this upstream's first byte (they go elsewhere), and end the
        streams it was sending (they are continued elsewhere, or end with an error event)."""
        for task in self.pending:
            if task not in self.aborted:
                self.aborted[task] = reason
                task.cancel(f"dsdeploy: {reason}")
        for stream in list(self.streams):
            stream.engine_lost()

    def expire_pending(self, now: float) -> None:
        """Cancel the requests whose first-byte (or whole-answer) deadline has passed."""
        for task, (deadline, reason) in self.pending.items():
            if now >= deadline and task not in self.aborted:
                self.aborted[task] = reason
                task.cancel(f"dsdeploy: {reason}")


class UpstreamPool:
    """Chooses the local upstream with the fewest requests in flight among those that may take one."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.upstreams = [LocalUpstream(u, config) for u in config.upstreams if not u.discover]
        self.discovered: dict[int, dict[str, LocalUpstream]] = {
            i: {} for i, u in enumerate(config.upstreams) if u.discover
        }  # spec index -> address -> member
        self.draining: list[LocalUpstream] = []  # removed members whose requests are still running
        self.max_waiting = config.saturation.max_waiting
        self.wait_queue = WaitQueue(config.wait_queue)  # requests that may not leave, waiting for a ready engine
        self.slo = config.slo.ttft_s
        self.slo_leave = (config.slo.ttft_s or 0.0) * config.slo.leave_ratio
        self._rotor = 0

    def set_addresses(self, index: int, addresses: set[str]) -> tuple[list[LocalUpstream], list[LocalUpstream]]:
        """Make the members of discovered upstream ``index`` match ``addresses``; return (added, removed)."""
        members = self.discovered[index]
        spec = self.config.upstreams[index]
        added = [LocalUpstream(spec, self.config, a) for a in sorted(addresses - members.keys())]
        removed = [members.pop(a) for a in sorted(members.keys() - addresses)]
        for up in added:
            members[up.label.rsplit("@", 1)[1]] = up
        if added:
            self.wait_queue.notify()
        if added or removed:
            gone = set(removed)
            self.upstreams = [u for u in self.upstreams if u not in gone] + added
            for up in removed:
                up.client.close()
            self.draining.extend(removed)
        return added, removed

    def expire_pending(self, now: float) -> None:
        """Apply first-byte and answer deadlines on every member, draining ones included."""
        for up in self.upstreams:
            if up.pending:
                up.expire_pending(now)
        if self.draining:
            for up in self.draining:
                up.expire_pending(now)
            self.draining = [u for u in self.draining if u.pending or u.in_flight]

    def __len__(self) -> int:
        return len(self.upstreams)

    def pick(
        self, exclude: set[LocalUpstream] | tuple = (), *, allow_saturated: bool
    ) -> tuple[LocalUpstream | None, str]:
        """Return (upstream, "") or (None, reason).

        Saturated upstreams are chosen only when ``allow_saturated`` (the request may not leave, so it
        queues locally rather than failing).
        """
        ups = self.upstreams
        n = len(ups)
        if n == 0:
            return None, NO_LOCAL
        best: LocalUpstream | None = None
        busy: LocalUpstream | None = None
        any_open = saturated = False
        start = self._rotor = (self._rotor + 1) % n
        max_waiting, slo = self.max_waiting, self.slo
        for i in range(n):
            up = ups[(start + i) % n]
            if up in exclude:
                continue
            if not up.circuit.allows_requests:
                any_open = True
                continue
            full = up.saturated(max_waiting)
            if full or (slo is not None and up.latency.over_target(slo, self.slo_leave, up.in_flight)):
                saturated = saturated or full
                if busy is None or up.in_flight < busy.in_flight:
                    busy = up
                continue
            if best is None or up.in_flight < best.in_flight:
                best = up
        if best is not None:
            return best, ""
        if busy is not None:
            return (busy, "") if allow_saturated else (None, SATURATED if saturated else OVER_TTFT_TARGET)
        if any_open:
            return None, ALL_CIRCUITS_OPEN
        return None, EXHAUSTED

    def record_success(self, up: LocalUpstream) -> None:
        up.circuit.record_success()

    def record_failure(self, up: LocalUpstream, *, immediate: bool = False) -> None:
        up.circuit.record_failure(time.monotonic(), immediate=immediate)

    def probe_result(
        self, up: LocalUpstream, ok: bool, failures_to_open: int, window_s: float = 0.0, *, answered: bool = False
    ) -> None:
        """Apply an active health probe result; an unresponsive upstream aborts its waiting requests.

        A failed probe does not count while the upstream sent bytes within ``window_s`` (busy, not frozen).
        ``answered``: it failed with a 5xx answer (draining, loading): no new requests go there, but the ones it
        is serving go on (a draining server finishes them).
        """
        now = time.monotonic()
        if not ok and not answered and now - up.client.last_progress < window_s:
            return
        if ok:  # an open circuit half-opens only after a chat probe (HealthMonitor), not on /health alone
            up.probe_failures = 0
            if not up.healthy and up.circuit.allows_requests:
                self.wait_queue.notify()
            up.healthy = True
            return
        up.probe_failures += 1
        if up.probe_failures >= failures_to_open:
            self.take_out(up)
            if not answered:
                up.abort_pending()

    def take_out(self, up: LocalUpstream) -> None:
        """Out of the pool: failed probes, or it answered a request that it is shutting down (not ready, circuit
        open; only a chat probe lets it back); its open requests are left to finish."""
        up.healthy = False
        up.starting = True
        up.circuit.record_failure(time.monotonic(), immediate=True)

    def turned_ready(self, up: LocalUpstream) -> None:
        """Its circuit lets requests through again (a chat probe succeeded): requests waiting for it go."""
        up.starting = False
        self.wait_queue.notify()

    @property
    def cold(self) -> bool:
        """No local engine is ready: none exists (scaled to zero), or every one is starting or restarting."""
        return all(u.not_ready for u in self.upstreams)

    @property
    def any_available(self) -> bool:
        return any(u.circuit.allows_requests for u in self.upstreams)
