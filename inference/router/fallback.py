"""FallbackPolicy: local pool first, then the cloud when allowed, else a clear refusal.

Local attempts: the least-loaded upstream; on a failure another one (up to ``retries.local_attempts``);
when there is no other, one retry on the same upstream (``retries.same_upstream``) after a 5xx, a reset or a
429: after the 429's ``Retry-After`` when it is within ``retries.retry_after_max_s``, else after a jittered
backoff. A 429 marks the upstream saturated (not broken) for its Retry-After. A local 400 that says the
context is too small sends data that may leave to the cloud (its context is longer).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from inference.router.backoff import backoff_delay
from inference.router.cloud import CloudRoute, stream_with_usage
from inference.router.config import RouterConfig
from inference.router.errors import RouterError
from inference.router.metrics import RouterMetrics
from inference.router.policy import DataClassPolicy
from inference.router.pool import LocalUpstream, UpstreamPool
from inference.router.proxy import (
    CONNECT_ERROR,
    CONNECT_REFUSED,
    CONTEXT_LENGTH,
    FIRST_BYTE_TIMEOUT,
    RESET,
    RESPONSE_TIMEOUT,
    UPSTREAM_5XX,
    UPSTREAM_429,
    UPSTREAM_DRAINING,
    AttemptFailed,
    Reply,
    bounded_local,
    is_context_length_error,
)
from inference.router.reasons import LOCAL_UNAVAILABLE, NO_LOCAL, OVER_TTFT_TARGET, SATURATED
from inference.router.record import RequestRecord, estimated_tokens
from inference.router.wait_queue import DEADLINE, GONE, SERVED

RETRIED_ON_SAME = frozenset({UPSTREAM_5XX, UPSTREAM_429, RESET})
BUSY_S = 1.0  # a 429 without Retry-After marks the upstream saturated this long


@dataclass(slots=True)
class Routed:
    reply: Reply
    route: str  # "local" or "cloud"
    upstream: LocalUpstream | None
    upstream_label: str
    fallback_reason: str | None
    attempts: int
    cloud_model: str | None = None  # the cloud model the request may use (None: it may not leave)

    def finish(self) -> None:
        """Release the upstream slot (after the last byte went to the client)."""
        self.reply.close()
        if self.upstream is not None:
            self.upstream.in_flight -= 1
            self.upstream = None


class FallbackPolicy:
    def __init__(
        self,
        config: RouterConfig,
        pool: UpstreamPool,
        policy: DataClassPolicy,
        metrics: RouterMetrics,
        cloud: CloudRoute | None,
        leaving: Callable[[RequestRecord, dict[str, Any], str], Awaitable[RouterError | None]] | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.policy = policy
        self.metrics = metrics
        self.cloud = cloud
        # Awaited as a request is about to leave for the cloud: the budgets hold its cost, or refuse it (it is
        # then routed as a request whose budget was spent at check: home, waiting, or that refusal).
        self.leaving = leaving

    async def start(self) -> None:
        if self.cloud is not None:
            await self.cloud.start()

    async def stop(self) -> None:
        for up in self.pool.upstreams:
            up.client.close()
        if self.cloud is not None:
            await self.cloud.stop()

    async def route(
        self,
        path: str,
        body: bytes,
        data: dict[str, Any],
        stream: bool,
        data_class: str,
        deadline: float,
        failures: list[str],
        request_id: bytes = b"-",
        cloud_refusal: RouterError | None = None,
        record: RequestRecord | None = None,
    ) -> Routed:
        """Serve from the local pool, else the cloud if the class may leave; ``failures`` collects
        ``upstream:reason`` for every failed attempt (for the audit log). ``cloud_refusal`` (a spent budget):
        the request stays home as if its class could not leave, and gets that error if no engine serves it.
        A request that may not leave waits while no local engine is ready (``wait_queue``); ``record`` gets
        its time waited."""
        cloud_model = None
        if self.cloud is not None and self.policy.may_leave(data_class) and cloud_refusal is None:
            cloud_model = self.cloud.model_for(data.get("model"))
        reason: str | None = None
        last: AttemptFailed | None = None
        attempts = 0
        queued_at: float | None = None  # when it began to wait for a ready engine (WaitQueue)
        outcome = GONE
        try:
            while True:
                if self.pool.upstreams:
                    routed, reason, last, attempts = await self._local(
                        path, body, data, stream, cloud_model, deadline, failures, request_id, attempts
                    )
                    if routed is not None:
                        outcome = SERVED
                        return routed
                else:
                    reason = NO_LOCAL
                if cloud_model is not None and record is not None and self.leaving is not None:
                    refusal = await self.leaving(record, data, cloud_model)
                    if refusal is not None:  # a budget spent since it was checked: it stays home after all
                        cloud_refusal, cloud_model = refusal, None
                        continue
                if cloud_model is not None or not self._may_wait():
                    if cloud_model is not None and self.pool.upstreams and self.pool.cold:
                        self.pool.wait_queue.cold_cloud += 1  # demand no engine was up for: it may wake them
                    break
                queue = self.pool.wait_queue
                now = time.monotonic()
                if queued_at is None:
                    if not queue.admit():
                        raise cloud_refusal or self._queue_refusal(data, data_class, reason, full=True)
                    queued_at = now
                    if record is not None:
                        record.queued_reason = reason
                until = min(deadline, queued_at + self.config.wait_queue.deadline_s)
                if now >= until:
                    outcome = DEADLINE if until < deadline else GONE
                    raise cloud_refusal or self._queue_refusal(data, data_class, reason, full=False)
                await queue.wait(until)
        finally:
            if queued_at is not None:
                self.pool.wait_queue.leave(outcome)
                if record is not None:
                    record.queued_ms = round((time.monotonic() - queued_at) * 1000.0, 3)
        return await self._cloud(
            path,
            data,
            stream,
            data_class,
            deadline,
            failures,
            cloud_model,
            reason,
            last,
            attempts,
            cloud_refusal,
            record,
        )

    def _may_wait(self) -> bool:
        """Whether a request that may not leave waits for an engine: the queue is on, the pool has local
        upstreams configured, and none of them is ready (scaled to zero, starting, all restarting)."""
        return self.config.wait_queue.enabled and bool(self.config.upstreams) and self.pool.cold

    def _queue_refusal(self, data: dict[str, Any], data_class: str, reason: str | None, *, full: bool) -> RouterError:
        q = self.config.wait_queue
        if self.cloud is None:
            where = "no cloud fallback is configured"
        elif self.policy.may_leave(data_class):
            where = f"no cloud model is mapped for model {data.get('model')!r} (cloud.models)"
        else:
            where = f"data class '{data_class}' may not leave the premises"
            self.metrics.blocked(data_class)
        if full:
            return RouterError(
                503,
                f"No local engine is ready ({reason}), {where}, and the wait queue is full "
                f"({q.max_requests} requests wait, wait_queue.max_requests).",
                code="wait_queue_full",
                retry_after=q.retry_after_s,
            )
        return RouterError(
            503,
            f"No local engine turned ready within {q.deadline_s:g} s (wait_queue.deadline_s; "
            f"{reason}) and {where}; engines may still be starting.",
            code="local_pool_not_ready",
            retry_after=q.retry_after_s,
        )

    async def _local(
        self,
        path: str,
        body: bytes,
        data: dict[str, Any],
        stream: bool,
        cloud_model: str | None,
        deadline: float,
        failures: list[str],
        request_id: bytes,
        attempts: int,
    ) -> tuple[Routed | None, str | None, AttemptFailed | None, int]:
        """The local attempts (the request path's hottest loop): (routed or None, reason, last failure, attempts)."""
        reason: str | None = None
        last: AttemptFailed | None = None
        timeouts, retries = self.config.timeouts, self.config.retries
        sent = body
        if stream:  # ask for the final usage event (tokens in the audit line); the relay drops it if unasked
            with_usage = stream_with_usage(data)
            if with_usage is not data:
                sent = json.dumps(with_usage, separators=(",", ":"), ensure_ascii=False).encode()
        tried: set[LocalUpstream] = set()
        up: LocalUpstream | None = None
        again = 0  # retries on ``up``
        while True:
            if up is None:
                if len(tried) >= retries.local_attempts:
                    break
                up, why = self.pool.pick(tried, allow_saturated=cloud_model is None)
                if up is None:
                    if reason is None or why in (SATURATED, OVER_TTFT_TARGET):
                        reason = why
                    break
                tried.add(up)
                again = 0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = reason or RESPONSE_TIMEOUT
                break
            attempts += 1
            up.in_flight += 1
            if stream:
                limit = self._first_byte_limit(up, len(body), tried, cloud_model, remaining)
            else:
                limit = min(timeouts.response_s, remaining)
            try:
                reply = await bounded_local(
                    up,
                    up.request(path, sent, request_id),
                    stream,
                    limit,
                    FIRST_BYTE_TIMEOUT if stream else RESPONSE_TIMEOUT,
                )
            except AttemptFailed as failure:
                up.in_flight -= 1
                reason, last = failure.reason, failure
                failures.append(f"{up.label}:{failure.reason}")
                self._count_failure(up, failure)
                wait = self._retry_same_after(up, failure, again, tried, cloud_model, deadline)
                if wait is None:
                    up = None
                else:
                    again += 1
                    await asyncio.sleep(wait)
                continue
            except BaseException:
                up.in_flight -= 1
                raise
            if reply.resent:  # the keep-alive client sent it twice: an attempt the audit line shows
                attempts += 1
                failures.append(f"{up.label}:stale_connection_resent")
            self.pool.record_success(up)
            if (
                cloud_model is not None
                and reply.status == 400
                and reply.body is not None
                and is_context_length_error(400, reply.body)
            ):
                up.in_flight -= 1
                reply.close()
                reason = CONTEXT_LENGTH
                failures.append(f"{up.label}:{CONTEXT_LENGTH}")
                break
            model = data.get("model")
            if reply.status == 200 and type(model) is str:
                up.last_model = model
            return Routed(reply, "local", up, up.label, None, attempts, cloud_model), None, None, attempts
        return None, reason, last, attempts

    async def _cloud(
        self,
        path: str,
        data: dict[str, Any],
        stream: bool,
        data_class: str,
        deadline: float,
        failures: list[str],
        cloud_model: str | None,
        reason: str | None,
        last: AttemptFailed | None,
        attempts: int,
        cloud_refusal: RouterError | None = None,
        record: RequestRecord | None = None,
    ) -> Routed:
        """The cloud when the request may leave, else the refusal."""
        reason = reason or LOCAL_UNAVAILABLE
        if cloud_model is None or self.cloud is None:
            if cloud_refusal is not None:
                raise cloud_refusal
            raise self._refusal(data, data_class, reason, last)
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
            raise RouterError(
                502,
                f"The local model pool is unavailable ({reason}) and the cloud API refused the "
                f"router's own API key ({reply.status}); check the key the router is given "
                "(cloud.api_key).",
                code="cloud_key_rejected",
                route="cloud",
                fallback_reason=reason,
            )
        return Routed(reply, "cloud", None, "cloud", reason, attempts + cloud_attempts, cloud_model)

    def _first_byte_limit(
        self, up: LocalUpstream, body_bytes: int, tried: set[LocalUpstream], cloud_model: str | None, remaining: float
    ) -> float:
        """How long a stream may wait for its first event: ``first_byte_s`` plus the prompt's prefill time
        (its size over the rate the engine's metrics show), when there is somewhere else to go; else the
        request's whole time (a frozen engine is still found by the probes)."""
        elsewhere = cloud_model is not None or any(
            u not in tried and u.circuit.allows_requests for u in self.pool.upstreams
        )
        if not elsewhere:
            return remaining
        timeouts = self.config.timeouts
        rate = up.prefill_rate or timeouts.prefill_tokens_per_s
        return min(remaining, timeouts.first_byte_s + estimated_tokens(body_bytes) / rate)

    def _count_failure(self, up: LocalUpstream, failure: AttemptFailed) -> None:
        self.metrics.local_failure(up.label, failure.reason)
        if failure.reason == UPSTREAM_429:  # busy, not broken: saturated for as long as it asked
            up.busy_until = time.monotonic() + (failure.retry_after if failure.retry_after is not None else BUSY_S)
            return
        if failure.reason == UPSTREAM_DRAINING:  # it finishes its open requests: leave them, send it no more
            self.pool.take_out(up)  # as a 5xx readiness probe does
            return
        if failure.reason in (CONNECT_REFUSED, CONNECT_ERROR):
            up.unreachable()  # (re)starting: requests that may not leave wait for it rather than fail
        self.pool.record_failure(up, immediate=failure.reason == CONNECT_REFUSED)

    def _retry_same_after(
        self,
        up: LocalUpstream,
        failure: AttemptFailed,
        again: int,
        tried: set[LocalUpstream],
        cloud_model: str | None,
        deadline: float,
    ) -> float | None:
        """Seconds to wait before trying ``up`` again, or None to move on (another upstream, the cloud)."""
        retries = self.config.retries
        if failure.reason not in RETRIED_ON_SAME or again >= retries.same_upstream:
            return None
        if any(
            u not in tried and u.circuit.allows_requests and not u.saturated(self.pool.max_waiting)
            for u in self.pool.upstreams
        ):
            return None  # another upstream can take it now
        if failure.reason == UPSTREAM_429 and failure.retry_after is not None:
            if failure.retry_after > retries.retry_after_max_s:
                return None
            wait = failure.retry_after
        else:
            if not up.circuit.allows_requests:
                return None
            wait = backoff_delay(again, retries.backoff_base_s, retries.backoff_max_s)
        return wait if time.monotonic() + wait < deadline else None

    def _refusal(self, data: dict[str, Any], data_class: str, reason: str, last: AttemptFailed | None) -> RouterError:
        """Why the request gets no answer: the engine's own 429 (with its Retry-After) when it asked for a
        wait, else the policy's 503."""
        leaves = self.cloud is not None and self.policy.may_leave(data_class)
        if last is not None and last.reason == UPSTREAM_429 and last.retry_after is not None:
            where = (
                f"data class '{data_class}' may not leave the premises"
                if not leaves
                else f"no cloud model is mapped for model {data.get('model')!r}"
            )
            return RouterError(
                429,
                f"The local model pool is rate limiting (Retry-After {last.retry_after:g} s) and {where}.",
                code="upstream_rate_limited",
                retry_after=last.retry_after,
            )
        if self.cloud is not None and not leaves:
            self.metrics.blocked(data_class)
            return self.policy.refusal(data_class, reason)
        if self.cloud is not None:
            return RouterError(
                503,
                f"The local model pool is unavailable ({reason}) and no cloud model is "
                f"mapped for model {data.get('model')!r} (cloud.models).",
                code="local_pool_unavailable",
                retry_after=1.0,
            )
        return self.policy.refusal(data_class, reason)


def _cloud_error(local_reason: str, failure: AttemptFailed) -> RouterError:
    what = f"{failure.reason}" + (f" {failure.status}" if failure.status else "")
    message = (
        f"The local model pool is unavailable ({local_reason}) and the cloud fallback failed "
        f"after {failure.attempts} attempt(s) (last: {what})."
    )
    if failure.reason == UPSTREAM_429:
        return RouterError(429, message, code="cloud_rate_limited", retry_after=failure.retry_after or 1.0)
    if failure.reason in (FIRST_BYTE_TIMEOUT, RESPONSE_TIMEOUT):
        return RouterError(504, message, code="cloud_timeout")
    return RouterError(502, message, code="cloud_unavailable", retry_after=1.0)
