"""FallbackPolicy: local pool first, then the cloud when allowed, else a clear refusal."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from inference.router.cloud import CloudRoute
from inference.router.config import RouterConfig
from inference.router.errors import RouterError
from inference.router.metrics import RouterMetrics
from inference.router.policy import DataClassPolicy
from inference.router.pool import SATURATED, LocalUpstream, UpstreamPool
from inference.router.proxy import (
    CONNECT_REFUSED,
    FIRST_BYTE_TIMEOUT,
    RESPONSE_TIMEOUT,
    UPSTREAM_429,
    AttemptFailed,
    Reply,
    bounded_local,
)


@dataclass(slots=True)
class Routed:
    reply: Reply
    route: str  # "local" or "cloud"
    upstream: LocalUpstream | None
    upstream_label: str
    fallback_reason: str | None
    attempts: int
    cloud_model: str | None = None

    def finish(self) -> None:
        """Release the upstream slot (after the last byte went to the client)."""
        self.reply.close()
        if self.upstream is not None:
            self.upstream.in_flight -= 1
            self.upstream = None


class FallbackPolicy:
    def __init__(self, config: RouterConfig, pool: UpstreamPool, policy: DataClassPolicy,
                 metrics: RouterMetrics, cloud: CloudRoute | None) -> None:
        self.config = config
        self.pool = pool
        self.policy = policy
        self.metrics = metrics
        self.cloud = cloud

    async def start(self) -> None:
        if self.cloud is not None:
            await self.cloud.start()

    async def stop(self) -> None:
        for up in self.pool.upstreams:
            up.client.close()
        if self.cloud is not None:
            await self.cloud.stop()

    async def route(self, path: str, body: bytes, data: dict[str, Any], stream: bool, data_class: str,
                    deadline: float, failures: list[str], request_id: bytes = b"-") -> Routed:
        """Serve from the local pool, else the cloud if the class may leave; ``failures`` collects
        ``upstream:reason`` for every failed attempt (for the audit log)."""
        cloud_model = None
        if self.cloud is not None and self.policy.may_leave(data_class):
            cloud_model = self.cloud.model_for(data.get("model"))
        reason: str | None = None
        attempts = 0
        if self.pool.upstreams:  # local attempts (inline: this is the request path's hottest loop)
            timeouts = self.config.timeouts
            tried: set[LocalUpstream] = set()
            for _ in range(self.config.retries.local_attempts):
                up, why = self.pool.pick(tried, allow_saturated=cloud_model is None)
                if up is None:
                    if reason is None or why == SATURATED:
                        reason = why
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    reason = reason or RESPONSE_TIMEOUT
                    break
                tried.add(up)
                attempts += 1
                up.in_flight += 1
                limit = min(timeouts.first_byte_s if stream else timeouts.response_s, remaining)
                try:
                    reply = await bounded_local(up, up.request(path, body, request_id), stream, limit,
                                                FIRST_BYTE_TIMEOUT if stream else RESPONSE_TIMEOUT)
                except AttemptFailed as failure:
                    up.in_flight -= 1
                    reason = failure.reason
                    failures.append(f"{up.label}:{failure.reason}")
                    self.pool.record_failure(up, immediate=failure.reason == CONNECT_REFUSED)
                    self.metrics.local_failure(up.label, failure.reason)
                    continue
                except BaseException:
                    up.in_flight -= 1
                    raise
                self.pool.record_success(up)
                return Routed(reply, "local", up, up.label, None, attempts)
        else:
            reason = "no_local_upstream"
        reason = reason or "local_unavailable"
        if cloud_model is None or self.cloud is None:
            if self.cloud is not None and not self.policy.may_leave(data_class):
                self.metrics.blocked(data_class)
                raise self.policy.refusal(data_class, reason)
            if self.cloud is not None:
                raise RouterError(503, f"The local model pool is unavailable ({reason}) and no cloud model is "
                                  f"mapped for model {data.get('model')!r} (cloud.models).",
                                  code="local_pool_unavailable", retry_after=1.0)
            raise self.policy.refusal(data_class, reason)
        self.metrics.fallback(reason)
        try:
            reply, cloud_attempts = await self.cloud.send(path, data, cloud_model, stream, deadline)
        except AttemptFailed as failure:
            failures.append(f"cloud:{failure.reason}")
            error = _cloud_error(reason, failure)
            error.route, error.fallback_reason = "cloud", reason
            raise error from None
        if reply.status in (401, 403):  # the router's cloud key, not the client's: do not pass it on as theirs
            reply.close()
            failures.append(f"cloud:rejected_key_{reply.status}")
            raise RouterError(502, f"The local model pool is unavailable ({reason}) and the cloud API refused the "
                              f"router's own API key ({reply.status}); check the key the router is given "
                              "(cloud.api_key).", code="cloud_key_rejected", route="cloud", fallback_reason=reason)
        return Routed(reply, "cloud", None, "cloud", reason, attempts + cloud_attempts, cloud_model)


def _cloud_error(local_reason: str, failure: AttemptFailed) -> RouterError:
    what = f"{failure.reason}" + (f" {failure.status}" if failure.status else "")
    message = (f"The local model pool is unavailable ({local_reason}) and the cloud fallback failed "
               f"after {failure.attempts} attempt(s) (last: {what}).")
    if failure.reason == UPSTREAM_429:
        return RouterError(429, message, code="cloud_rate_limited", retry_after=failure.retry_after or 1.0)
    if failure.reason in (FIRST_BYTE_TIMEOUT, RESPONSE_TIMEOUT):
        return RouterError(504, message, code="cloud_timeout")
    return RouterError(502, message, code="cloud_unavailable", retry_after=1.0)
