"""Prometheus metrics of the router.

The request path only bumps plain Python counters (no locks, no label lookups); a collector turns
them into Prometheus families when ``/metrics`` is scraped (prometheus-client does the exposition).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from inference.router.config import CloudConfig
from inference.router.pool import UpstreamPool

if TYPE_CHECKING:
    from inference.router.record import RequestRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
P = "dsdeploy_router_"


class RouterMetrics:
    def __init__(self, enabled: bool, pool: UpstreamPool, cloud: CloudConfig | None) -> None:
        self.enabled = enabled
        self.pool = pool
        self.cloud = cloud
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.fallbacks: defaultdict[str, int] = defaultdict(int)
        self.local_failures: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.tokens: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.stream_errors: defaultdict[str, int] = defaultdict(int)
        self.blocked_count: defaultdict[str, int] = defaultdict(int)
        self.cache_count: defaultdict[str, int] = defaultdict(int)
        self.continuations: defaultdict[str, int] = defaultdict(int)
        self.cloud_spend_usd = 0.0
        self.rate_limited_count = 0
        self.auth_failures = 0
        self.audit_dropped = 0  # copied from the audit log when scraped
        # route -> [bucket counts..., +Inf count], sum
        self._hist: dict[str, list[int]] = {}
        self._hist_sum: defaultdict[str, float] = defaultdict(float)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def request(self, rec: RequestRecord, seconds: float) -> None:
        """Count one finished request; the cloud's share of its tokens is priced (a continued stream has one)."""
        if not self.enabled:
            return
        # A cache hit is counted as route "cache" (the audit line keeps the route that made the answer):
        # a stored cloud answer sent again costs nothing and is no fallback.
        route = "cache" if rec.upstream == "cache" else rec.route
        prompt_tokens, completion_tokens = rec.prompt_tokens, rec.completion_tokens
        self.requests[(route, rec.status)] += 1
        hist = self._hist.get(route)
        if hist is None:
            hist = self._hist[route] = [0] * (len(BUCKETS) + 1)
        hist[bisect_left(BUCKETS, seconds)] += 1
        self._hist_sum[route] += seconds
        if prompt_tokens:
            self.tokens[(route, "prompt")] += prompt_tokens
        if completion_tokens:
            self.tokens[(route, "completion")] += completion_tokens
        if rec.continuation is not None:
            self.continuations[rec.fallback_reason or "unknown"] += 1
        if rec.cloud_model and self.cloud is not None:
            price = self.cloud.prices.get(rec.cloud_model)
            if price is not None:
                self.cloud_spend_usd += price.cost_usd(rec.cloud_prompt_tokens, rec.cloud_completion_tokens)

    def fallback(self, reason: str) -> None:
        self.fallbacks[reason] += 1

    def local_failure(self, upstream: str, reason: str) -> None:
        self.local_failures[(upstream, reason)] += 1

    def stream_error(self, route: str) -> None:
        self.stream_errors[route] += 1

    def blocked(self, data_class: str) -> None:
        self.blocked_count[data_class] += 1

    def cache(self, result: str) -> None:
        self.cache_count[result] += 1

    def rate_limited(self) -> None:
        self.rate_limited_count += 1

    def auth_failure(self) -> None:
        self.auth_failures += 1

    def render(self) -> bytes:
        self._forget_gone_upstreams()
        return generate_latest(self.registry)

    def _forget_gone_upstreams(self) -> None:
        """Drop the series of discovered members that are gone (pods come and go: labels must not pile up)."""
        known = {u.label for u in self.pool.upstreams} | {u.label for u in self.pool.draining}
        for key in [k for k in self.local_failures if k[0] not in known]:
            del self.local_failures[key]

    # prometheus-client collector protocol
    def collect(self) -> Iterator[Metric]:
        def counter(name: str, doc: str, labels: list[str], items: dict) -> CounterMetricFamily:
            fam = CounterMetricFamily(P + name, doc, labels=labels)
            for key, value in sorted(items.items()):
                key = key if isinstance(key, tuple) else (key,)
                fam.add_metric([str(k) for k in key], value)
            return fam

        yield counter("requests", "Requests answered, by route and HTTP status", ["route", "status"], self.requests)
        yield counter("fallbacks", "Requests sent to the cloud, by reason", ["reason"], self.fallbacks)
        yield counter(
            "local_failures",
            "Failed attempts on local upstreams, by upstream and reason",
            ["upstream", "reason"],
            self.local_failures,
        )
        yield counter("tokens", "Tokens, by route and kind (prompt/completion)", ["route", "kind"], self.tokens)
        yield counter(
            "stream_errors", "Streams ended by an error event after their first byte", ["route"], self.stream_errors
        )
        yield counter(
            "policy_blocked", "Requests refused the cloud by the data-class policy", ["data_class"], self.blocked_count
        )
        yield counter("cache", "Cache lookups by result", ["result"], self.cache_count)
        yield counter(
            "stream_continuations",
            "Streams a local engine broke off and the cloud finished, by why",
            ["reason"],
            self.continuations,
        )
        yield CounterMetricFamily(
            P + "audit_dropped",
            "Audit records dropped while the writer was behind (audit.max_buffered)",
            value=self.audit_dropped,
        )
        yield CounterMetricFamily(
            P + "cloud_spend_usd", "Estimated cloud spend from tokens and cloud.prices", value=self.cloud_spend_usd
        )
        yield CounterMetricFamily(
            P + "rate_limited", "Requests refused by a per-key limit", value=self.rate_limited_count
        )
        yield CounterMetricFamily(
            P + "auth_failures", "Requests refused for a missing or unknown key", value=self.auth_failures
        )
        hist = HistogramMetricFamily(P + "request_duration_seconds", "Time to complete a request", labels=["route"])
        for route, counts in sorted(self._hist.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            hist.add_metric([route], buckets, self._hist_sum[route])
        yield hist
        healthy = GaugeMetricFamily(
            P + "upstream_healthy", "1 when the upstream's circuit lets requests through", labels=["upstream"]
        )
        in_flight = GaugeMetricFamily(
            P + "upstream_in_flight", "Requests in flight on the upstream", labels=["upstream"]
        )
        waiting = GaugeMetricFamily(
            P + "upstream_waiting", "vllm:num_requests_waiting last read from the upstream", labels=["upstream"]
        )
        ttft = GaugeMetricFamily(
            P + "upstream_ttft_estimate_seconds",
            "Estimated time to first token of a request "
            "sent to the upstream now (slo.ttft_s compares it; absent until it showed its speed)",
            labels=["upstream"],
        )
        for up in self.pool.upstreams:
            healthy.add_metric([up.label], 1.0 if up.circuit.allows_requests else 0.0)
            in_flight.add_metric([up.label], float(up.in_flight))
            waiting.add_metric([up.label], float(up.waiting))
            estimate = up.latency.estimate(up.in_flight)
            if estimate is not None:
                ttft.add_metric([up.label], estimate)
        yield healthy
        yield in_flight
        yield waiting
        yield ttft
        queue = self.pool.wait_queue
        # KEDA scales the engines on this one (from zero, too): demand that no ready engine serves yet
        yield GaugeMetricFamily(
            P + "waiting_requests",
            "Requests that may not leave, waiting for a local engine to turn ready (wait_queue)",
            value=float(queue.waiting),
        )
        yield CounterMetricFamily(
            P + "cold_cloud_requests",
            "Requests sent to the cloud because no local engine was ready (scaled to zero, starting, all "
            "restarting): demand that may wake the engines",
            value=float(queue.cold_cloud),
        )
        yield counter(
            "wait_queue",
            "Requests that waited for a ready local engine, by outcome (served, deadline, "
            "full: refused at once, gone: the client or the request's deadline first)",
            ["outcome"],
            queue.outcomes,
        )
