"""Prometheus metrics of the router (own registry; children cached so the hot path stays cheap)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from inference.router.config import CloudConfig
from inference.router.pool import UpstreamPool

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class RouterMetrics:
    def __init__(self, enabled: bool, pool: UpstreamPool, cloud: CloudConfig | None) -> None:
        self.enabled = enabled
        self.cloud = cloud
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "dsdeploy_router_"
        self._requests = Counter(p + "requests", "Requests answered, by route and HTTP status", ["route", "status"], registry=r)
        self._fallbacks = Counter(p + "fallbacks", "Requests sent to the cloud, by reason", ["reason"], registry=r)
        self._local_failures = Counter(
            p + "local_failures", "Failed attempts on local upstreams, by upstream and reason",
            ["upstream", "reason"], registry=r,
        )
        self._latency = Histogram(p + "request_duration_seconds", "Time to complete a request", ["route"], buckets=_BUCKETS, registry=r)
        self._tokens = Counter(p + "tokens", "Tokens, by route and kind (prompt/completion)", ["route", "kind"], registry=r)
        self._spend = Counter(p + "cloud_spend_usd", "Estimated cloud spend from token counts and cloud.prices", registry=r)
        self._stream_errors = Counter(p + "stream_errors", "Streams ended by an error event after their first byte", ["route"], registry=r)
        self._blocked = Counter(p + "policy_blocked", "Requests refused the cloud by the data-class policy", ["data_class"], registry=r)
        self._cache = Counter(p + "cache", "Cache lookups by result", ["result"], registry=r)
        self._rate_limited = Counter(p + "rate_limited", "Requests refused by a per-key limit", registry=r)
        self._auth_failures = Counter(p + "auth_failures", "Requests refused for a missing or unknown key", registry=r)
        healthy = Gauge(p + "upstream_healthy", "1 when the upstream's circuit lets requests through", ["upstream"], registry=r)
        in_flight = Gauge(p + "upstream_in_flight", "Requests in flight on the upstream", ["upstream"], registry=r)
        waiting = Gauge(p + "upstream_waiting", "vllm:num_requests_waiting last read from the upstream", ["upstream"], registry=r)
        for up in pool.upstreams:
            healthy.labels(up.label).set_function(lambda u=up: 1.0 if u.circuit.allows_requests else 0.0)
            in_flight.labels(up.label).set_function(lambda u=up: float(u.in_flight))
            waiting.labels(up.label).set_function(lambda u=up: float(u.waiting))
        self._children: dict[tuple[str, int], tuple] = {}

    def request(self, route: str, status: int, seconds: float, prompt_tokens: int, completion_tokens: int,
                cloud_model: str | None) -> None:
        if not self.enabled:
            return
        key = (route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._requests.labels(route, str(status)),
                self._latency.labels(route),
                self._tokens.labels(route, "prompt"),
                self._tokens.labels(route, "completion"),
            )
        req, lat, tok_p, tok_c = children
        req.inc()
        lat.observe(seconds)
        if prompt_tokens:
            tok_p.inc(prompt_tokens)
        if completion_tokens:
            tok_c.inc(completion_tokens)
        if route == "cloud" and cloud_model and self.cloud is not None:
            price = self.cloud.prices.get(cloud_model)
            if price is not None:
                self._spend.inc(
                    (prompt_tokens * price.input_usd_per_mtok + completion_tokens * price.output_usd_per_mtok) / 1e6
                )

    def fallback(self, reason: str) -> None:
        if self.enabled:
            self._fallbacks.labels(reason).inc()

    def local_failure(self, upstream: str, reason: str) -> None:
        if self.enabled:
            self._local_failures.labels(upstream, reason).inc()

    def stream_error(self, route: str) -> None:
        if self.enabled:
            self._stream_errors.labels(route).inc()

    def blocked(self, data_class: str) -> None:
        if self.enabled:
            self._blocked.labels(data_class).inc()

    def cache(self, result: str) -> None:
        if self.enabled:
            self._cache.labels(result).inc()

    def rate_limited(self) -> None:
        if self.enabled:
            self._rate_limited.inc()

    def auth_failure(self) -> None:
        if self.enabled:
            self._auth_failures.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
