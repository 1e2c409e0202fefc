"""The router's ASGI app: plain ASGI (no framework on the hot path), run by uvicorn."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
import traceback
from typing import Any, TextIO

from inference.router.audit import AuditLog
from inference.router.auth import Authenticator
from inference.router.body_deadline import BodyDeadlines
from inference.router.cache import ResponseCache, is_deterministic
from inference.router.cloud import CloudRoute
from inference.router.config import RouterConfig, strictest
from inference.router.errors import RouterError
from inference.router.fallback import FallbackPolicy, Routed
from inference.router.health import HealthMonitor
from inference.router.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from inference.router.metrics import RouterMetrics
from inference.router.payload import parse_body
from inference.router.policy import DataClassPolicy
from inference.router.pool import UpstreamPool
from inference.router.proxy import AttemptFailed, answer_usage
from inference.router.ratelimit import RateLimiter
from inference.router.reasoning_shape import for_clients
from inference.router.streaming import relay

_ID_PREFIX = os.urandom(8).hex()  # per process; with a counter: unique ids without uuid4's cost
_ID_COUNTER = itertools.count(1)


def usage_of(body: bytes) -> dict[str, Any] | None:
    try:
        return answer_usage(body)
    except AttemptFailed:
        return None


def token_count(usage: dict[str, Any] | None, key: str, default: int = 0) -> int:
    """A token count from an upstream's ``usage``; what is not a non-negative integer counts as unknown."""
    value = usage.get(key) if usage else None
    return value if type(value) is int and value >= 0 else default


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


COMPLETION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
JSON = b"application/json"
LOCAL = b"local"


def _headers(content_type: bytes, route: bytes, request_id: bytes, extra: list[tuple[bytes, bytes]] | None = None
             ) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", content_type), (b"x-dsdeploy-route", route), (b"x-dsdeploy-request-id", request_id)]
    if extra:
        headers.extend(extra)
    return headers


class RouterApp:
    def __init__(self, config: RouterConfig, *, audit_stream: TextIO | None = None) -> None:
        self.config = config
        self.pool = UpstreamPool(config)
        self.policy = DataClassPolicy(config)
        self.auth = Authenticator(config)
        self.limiter = RateLimiter()
        self.cache = ResponseCache(config.cache.max_bytes, config.cache.ttl_s) if config.cache.enabled else None
        self.audit = AuditLog(config.audit, audit_stream)
        self.metrics = RouterMetrics(config.metrics.enabled, self.pool, config.cloud)
        self.body_deadlines = BodyDeadlines(config.timeouts.body_s)
        self.health = HealthMonitor(config, self.pool, self.body_deadlines)
        self.cloud = CloudRoute(config.cloud) if config.cloud is not None else None
        self.fallback = FallbackPolicy(config, self.pool, self.policy, self.metrics, self.cloud)
        self.started = False

    async def startup(self) -> None:
        await self.fallback.start()
        await self.health.start()
        await self.audit.start()
        self.started = True

    async def shutdown(self) -> None:
        await self.health.stop()
        await self.fallback.stop()
        await self.audit.stop()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path in COMPLETION_PATHS:
                if scope["method"] != "POST":
                    await self._error(send, RouterError(405, f"Use POST for {path}."), LOCAL, b"-")
                    return
                await self._completion(scope, receive, send, path)
            else:
                await self._other(scope, send, path)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # reported to uvicorn, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _completion(self, scope: dict[str, Any], receive: Any, send: Any, path: str) -> None:
        started = time.perf_counter()
        wall = time.time()
        request_id = f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"
        rid = request_id.encode()
        authorization = data_class_header = None
        content_length = -1
        repeated_auth = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                repeated_auth = authorization is not None
                authorization = value
            elif name == b"x-data-class":
                # repeated (a gateway stamps one, the client sends another): the strictest one counts
                data_class_header = value if data_class_header is None else data_class_header + b"," + value
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
        # the audit record's fields, as locals until the request ends
        key_id = tenant = data_class = model = upstream = fallback_reason = cache_result = error = None
        stream: bool | None = None
        route_name = "local"
        attempts = 0
        failures: list[str] = []
        responded = False  # the response start has gone out: its status can no longer change
        data: dict[str, Any] | None = None
        routed: Routed | None = None
        status = 500
        prompt_tokens = completion_tokens = 0
        try:
            if repeated_auth:
                raise RouterError(400, "More than one Authorization header; send exactly one.",
                                  code="invalid_api_key", param="Authorization")
            principal = self.auth.authenticate(authorization)
            key_id = principal.key_id
            tenant = principal.tenant
            if principal.rpm is not None:
                wait = self.limiter.acquire(principal.key_id, principal.rpm)
                if wait is not None:
                    self.metrics.rate_limited()
                    raise RouterError(429, f"Rate limit of {principal.rpm} requests per minute reached for key "
                                      f"'{principal.key_id}'.", code="rate_limit_exceeded", retry_after=wait)
            data_class = self.policy.resolve(data_class_header, principal.default_class)
            if principal.min_class is not None:  # the key's floor: a header cannot loosen it
                data_class = strictest(data_class, principal.min_class)
            body = await self._read_body_in_time(receive, content_length)
            data = parse_body(path, body)
            stream = bool(data.get("stream"))
            model = data.get("model")
            cache_key = None
            if self.cache is not None and is_deterministic(data):
                cache_key = self.cache.key(principal.tenant, path, data)
                hit = self.cache.get(cache_key)
                cache_result = "hit" if hit is not None else "miss"
                self.metrics.cache(cache_result)
                if hit is not None:  # nothing is sent anywhere; the route says where the answer was made
                    status = 200
                    route_name = hit.route
                    upstream = "cache"
                    responded = True
                    await self._send_body(send, 200, hit.content_type.encode(), hit.route.encode(), rid, hit.body,
                                          [(b"x-dsdeploy-cache", b"hit")])
                    return
            deadline = time.monotonic() + self.config.timeouts.request_s
            routed = await self.fallback.route(path, body, data, stream, data_class, deadline, failures, rid)
            reply = routed.reply = for_clients(path, routed.reply)
            route_name = routed.route
            upstream = routed.upstream_label
            fallback_reason = routed.fallback_reason
            attempts = routed.attempts
            status = reply.status
            if reply.first_chunk is not None:
                responded = True
                await send({"type": "http.response.start", "status": 200, "headers": _headers(
                    reply.content_type.encode(), route_name.encode(), rid, [(b"cache-control", b"no-cache")])})
                outcome = await relay(reply, send, receive, self.config.timeouts.stream_idle_s, deadline)
                if outcome.error is not None:
                    error = outcome.error
                    self.metrics.stream_error(route_name)
                elif outcome.client_gone:
                    error = "client_disconnected"
                prompt_tokens = token_count(outcome.usage, "prompt_tokens")
                completion_tokens = token_count(outcome.usage, "completion_tokens", max(0, outcome.events - 1))
            else:
                assert reply.body is not None
                headers = [(b"content-type", reply.content_type.encode()), (b"content-length", b"%d" % len(reply.body)),
                           (b"x-dsdeploy-route", LOCAL if route_name == "local" else route_name.encode()),
                           (b"x-dsdeploy-request-id", rid)]
                if reply.retry_after and status >= 400:
                    headers.append((b"retry-after", reply.retry_after.encode()))
                responded = True
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": reply.body})
                usage = usage_of(reply.body) if status == 200 else None  # after the client has its answer
                if usage is not None:
                    prompt_tokens = token_count(usage, "prompt_tokens")
                    completion_tokens = token_count(usage, "completion_tokens")
                if cache_key is not None and status == 200 and self.cache is not None:
                    self.cache.put(cache_key, reply.body, reply.content_type, route_name)
        except RouterError as exc:
            status = exc.status
            error = exc.code
            if exc.route == "cloud":  # it did leave: say so in the header, the audit and the metrics
                route_name = "cloud"
                upstream = "cloud"
                fallback_reason = exc.fallback_reason
            await self._error(send, exc, exc.route.encode(), rid)
        except Exception as exc:  # a router bug: answer in the OpenAI shape, keep the trace in the log
            error = "internal_error"
            traceback.print_exception(exc, file=sys.stderr)
            if not responded:  # a started response cannot change its status; the client sees it cut
                status = 500
                await self._error(send, RouterError(500, f"Internal router error (request {request_id})."),
                                  LOCAL, rid)
        finally:
            if routed is not None:
                routed.finish()
            seconds = time.perf_counter() - started
            if routed is None and failures:
                attempts = len(failures)
            # A cache hit is counted as route "cache" (the audit line keeps the route that made the answer):
            # a stored cloud answer sent again costs nothing and is no fallback.
            self.metrics.request("cache" if upstream == "cache" else route_name, status, seconds, prompt_tokens,
                                 completion_tokens, routed.cloud_model if routed is not None else None)
            self.audit.record((request_id, wall, key_id, tenant, data_class, "POST", path, model, stream, route_name,
                               upstream, status, prompt_tokens, completion_tokens, round(seconds * 1000.0, 3),
                               fallback_reason, attempts, failures, cache_result, error), data)

    async def _read_body_in_time(self, receive: Any, content_length: int) -> bytes:
        """The body, or a 408 when it has not all arrived within ``timeouts.body_s`` (swept, no timer)."""
        deadlines = self.body_deadlines
        task = deadlines.begin(time.monotonic())
        try:
            body = await self._read_body(receive, content_length)
        except asyncio.CancelledError:
            if not deadlines.end(task):
                raise
            assert task is not None
            task.uncancel()
            raise RouterError(408, f"The request body did not arrive within {deadlines.seconds:g} s "
                              "(timeouts.body_s).", code="request_timeout") from None
        deadlines.end(task)  # the sweep cancels only while the read waits, so no cancel is pending here
        return body

    async def _read_body(self, receive: Any, content_length: int) -> bytes:
        limit = self.config.limits.max_body_bytes
        if content_length > limit:
            raise RouterError(400, f"Request body of {content_length} bytes exceeds the limit of {limit} bytes "
                              "(limits.max_body_bytes).", code="body_too_large")
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > limit:
                raise RouterError(400, f"Request body exceeds the limit of {limit} bytes.", code="body_too_large")
            return body
        parts = [body]
        size = len(body)
        while message.get("more_body"):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RouterError(400, f"Request body exceeds the limit of {limit} bytes.", code="body_too_large")
            parts.append(chunk)
        return b"".join(parts)

    @staticmethod
    async def _send_body(send: Any, status: int, content_type: bytes, route: bytes, rid: bytes, body: bytes,
                         extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)),
                   (b"x-dsdeploy-route", route), (b"x-dsdeploy-request-id", rid)]
        if extra:
            headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send: Any, exc: RouterError, route: bytes, rid: bytes) -> None:
        extra = None
        if exc.retry_after is not None:
            extra = [(b"retry-after", str(max(1, int(exc.retry_after + 0.999))).encode())]
        if exc.status == 401:
            self.metrics.auth_failure()
        await self._send_body(send, exc.status, JSON, route, rid, exc.body(), extra)

    async def _other(self, scope: dict[str, Any], send: Any, path: str) -> None:
        rid = new_request_id().encode()
        method = scope["method"]
        if path == "/health" and method in ("GET", "HEAD"):
            await self._send_body(send, 200, JSON, LOCAL, rid, b'{"status":"ok"}')
        elif path == "/ready" and method in ("GET", "HEAD"):
            ready = self.started and (self.pool.any_available or self.cloud is not None)
            await self._send_body(send, 200 if ready else 503, JSON, LOCAL, rid,
                                  json.dumps({"ready": ready, "upstreams": self._upstream_states()}).encode())
        elif path == "/metrics" and method == "GET" and self.config.metrics.enabled:
            await self._send_body(send, 200, METRICS_CONTENT_TYPE.encode(), LOCAL, rid, self.metrics.render())
        elif path == "/v1/models" and method == "GET":
            await self._models(scope, send, rid)
        else:
            await self._error(send, RouterError(404, f"No route for {method} {path}.", code="not_found"), LOCAL, rid)

    def _upstream_states(self) -> list[dict[str, Any]]:
        return [{"upstream": u.label, "circuit": u.circuit.state, "in_flight": u.in_flight, "waiting": u.waiting}
                for u in self.pool.upstreams]

    async def _models(self, scope: dict[str, Any], send: Any, rid: bytes) -> None:
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        try:
            self.auth.authenticate(authorization)
        except RouterError as exc:
            await self._error(send, exc, LOCAL, rid)
            return
        from inference.router.models import list_models  # small, used rarely

        status, body, route = await list_models(self)
        await self._send_body(send, status, JSON, route.encode(), rid, body)
