"""The router's ASGI app: plain ASGI (no framework on the hot path), run by uvicorn (``command.uvicorn_config``).

One completion request goes: its headers checked (``request_head``), its key, limits and data class, its
body read in time and validated, the cache, the route (``fallback``), then the answer sent whole or as a
relayed stream (``streaming``); a ``RequestRecord`` is filled in on the way and becomes its audit line.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from typing import Any, TextIO

from inference.router.audit import AuditLog
from inference.router.auth import Authenticator, Principal
from inference.router.body_deadline import BodyDeadlines
from inference.router.budgets import EXHAUSTED as BUDGET_EXHAUSTED
from inference.router.budgets import BudgetGate
from inference.router.cache import ResponseCache, is_deterministic
from inference.router.cloud import CloudRoute
from inference.router.config import RouterConfig, strictest
from inference.router.connections import watch_disconnect
from inference.router.continuation import ChatStream
from inference.router.errors import RouterError
from inference.router.fallback import FallbackPolicy, Routed
from inference.router.health import HealthMonitor
from inference.router.metrics import RouterMetrics
from inference.router.ops import serve_other
from inference.router.payload import parse_body
from inference.router.policy import DataClassPolicy
from inference.router.pool import UpstreamPool
from inference.router.proxy import AttemptFailed, Reply
from inference.router.reasoning_shape import for_clients
from inference.router.reasons import STREAM_CONTINUED
from inference.router.record import (
    RequestRecord,
    estimated_tokens,
    new_request_id,
    requested_completion_tokens,
    token_count,
)
from inference.router.request_head import RequestHead, origins
from inference.router.responses import LOCAL, STREAM_HEADERS, response_headers, send_error, send_whole
from inference.router.shared_state import RedisState, shared_state
from inference.router.streaming import Continuer, StreamPlan, StreamRelay

COMPLETION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
CHAT_PATH = "/v1/chat/completions"
CACHE_HIT = ((b"x-dsdeploy-cache", b"hit"),)


class ClientGone(Exception):
    """The client closed its connection while its request waited for an upstream."""


class RouterApp:
    def __init__(self, config: RouterConfig, *, audit_stream: TextIO | None = None) -> None:
        self.config = config
        self.pool = UpstreamPool(config)
        self.policy = DataClassPolicy(config)
        self.auth = Authenticator(config)
        self.shared = shared_state(config.limits)  # rate limits and budgets: Redis, or this replica
        self.cache = ResponseCache(config.cache.max_bytes, config.cache.ttl_s) if config.cache.enabled else None
        self.audit = AuditLog(config.audit, audit_stream)
        self.metrics = RouterMetrics(config.metrics.enabled, self.pool, config.cloud)
        self.body_deadlines = BodyDeadlines(config.timeouts.body_s)
        self.health = HealthMonitor(config, self.pool, self.body_deadlines)
        self.cloud = CloudRoute(config.cloud, config.limits.max_answer_bytes) if config.cloud is not None else None
        budgeted = config.limits.budgets.any or any(k.budget is not None for k in config.auth.keys)
        self.budgets = BudgetGate(config, self.shared) if budgeted and self.cloud is not None else None
        leaving = self._hold if self.budgets is not None else None
        self.fallback = FallbackPolicy(config, self.pool, self.policy, self.metrics, self.cloud, leaving)
        if self.budgets is not None:
            self.metrics.registry.register(self.budgets)
        if isinstance(self.shared, RedisState):
            self.metrics.registry.register(self.shared)
        self.allowed_origins = origins(config.server.allowed_origins)
        self.models_cache: tuple[float, tuple[int, bytes, str]] | None = None
        self.started = False

    async def startup(self) -> None:
        await self.fallback.start()
        await self.health.start()
        await self.audit.start()
        self.started = True

    async def shutdown(self) -> None:
        await self.health.stop()
        await self.fallback.stop()
        await self.shared.close()
        await self.audit.stop()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path in COMPLETION_PATHS:
                if scope["method"] != "POST":
                    await send_error(
                        send, RouterError(405, f"Use POST for {path}.", allow="POST"), LOCAL, new_request_id().encode()
                    )
                    return
                await self._completion(scope, receive, send, path)
            else:
                await serve_other(self, scope, send, path)
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

    async def rate_limit(self, principal: Principal) -> None:
        if principal.rpm is not None:
            wait = await self.shared.rate(principal.key_id, principal.rpm)
            if wait is not None:
                self.metrics.rate_limited()
                raise RouterError(
                    429,
                    f"Rate limit of {principal.rpm} requests per minute reached for key '{principal.key_id}'.",
                    code="rate_limit_exceeded",
                    retry_after=wait,
                )

    async def _hold(
        self, rec: RequestRecord, data: dict[str, Any], cloud_model: str, prefix_tokens: int = 0
    ) -> RouterError | None:
        """As the request leaves for the cloud: its budgets checked and its estimated cost charged in one step
        (budgets.hold), once; the refusal if a budget is spent (or cannot be counted) by now. A continuation's
        prompt holds the local part it continues, its completion what is left of the bound: the request's
        max_completion_tokens/max_tokens, else what the cloud model answers at most without one
        (cloud.default_max_tokens)."""
        if self.budgets is None or rec.budget_held or rec.charged:
            return None
        prompt = estimated_tokens(rec.request_bytes) + prefix_tokens
        bound = requested_completion_tokens(data) or self.budgets.default_max_tokens.get(cloud_model, 0)
        completion = max(1, bound - prefix_tokens) if bound else 0
        rec.budget_held, refusal = await self.budgets.hold(rec.key_id or "anonymous", cloud_model, prompt, completion)
        if refusal is not None:
            rec.cloud_refused = refusal.code
        return refusal

    async def _charge(self, rec: RequestRecord) -> None:
        """Add the request's cloud spend to the budgets, less what was held for it, once."""
        if self.budgets is not None and (rec.cloud_model is not None or rec.budget_held) and not rec.charged:
            rec.charged = True
            await self.budgets.charge(
                rec.key_id or "anonymous",
                rec.cloud_model,
                rec.cloud_prompt_tokens,
                rec.cloud_completion_tokens,
                held=rec.budget_held,
            )

    def upstream_states(self) -> list[dict[str, Any]]:
        return [
            {"upstream": u.label, "circuit": u.circuit.state, "in_flight": u.in_flight, "waiting": u.waiting}
            for u in self.pool.upstreams
        ]

    async def _completion(self, scope: dict[str, Any], receive: Any, send: Any, path: str) -> None:
        started = time.perf_counter()
        rec = RequestRecord(new_request_id(), time.time(), path)
        rid = rec.request_id.encode()
        responded = False  # the response start has gone out: its status can no longer change
        data: dict[str, Any] | None = None
        routed: Routed | None = None
        try:
            head = RequestHead.read(scope["headers"])
            head.check(self.allowed_origins)
            principal = self.auth.authenticate(head.authorization)
            rec.key_id, rec.tenant = principal.key_id, principal.tenant
            await self.rate_limit(principal)
            data_class = self.policy.resolve(head.data_class, principal.default_class)
            if principal.min_class is not None:  # the key's floor: a header cannot loosen it
                data_class = strictest(data_class, principal.min_class)
            rec.data_class = data_class
            body = await self._read_body_in_time(receive, head.content_length)
            rec.request_bytes = len(body)
            data = parse_body(path, body)
            stream = rec.stream = bool(data.get("stream"))
            model = data.get("model")
            rec.model = model if type(model) is str else None
            cache_key = None
            if self.cache is not None and is_deterministic(data):
                cache_key = self.cache.key(principal.tenant, path, data)
                hit = self.cache.get(cache_key)
                rec.cache = "hit" if hit is not None else "miss"
                self.metrics.cache(rec.cache)
                if hit is not None:  # nothing is sent anywhere; the route says where the answer was made
                    rec.status, rec.route, rec.upstream = 200, hit.route, "cache"
                    responded = True
                    await send_whole(
                        send, 200, hit.content_type.encode(), hit.route.encode(), rid, hit.body, extra=CACHE_HIT
                    )
                    return
            deadline = time.monotonic() + self.config.timeouts.request_s
            cloud_refusal = None
            if self.budgets is not None and self.policy.may_leave(data_class):
                cloud_refusal = await self.budgets.check(principal.key_id)
                rec.cloud_refused = cloud_refusal.code if cloud_refusal is not None else None
            routed = await self._route(
                scope, receive, path, body, data, stream, data_class, deadline, rec, rid, cloud_refusal
            )
            reply = routed.reply = for_clients(path, routed.reply)  # whole answers; streams per event
            rec.route, rec.upstream, rec.fallback_reason = routed.route, routed.upstream_label, routed.fallback_reason
            rec.attempts, rec.status = routed.attempts, reply.status
            if routed.route == "cloud":
                rec.cloud_model = routed.cloud_model
            route = LOCAL if routed.route == "local" else routed.route.encode()
            if reply.first_chunk is not None:
                responded = True
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": response_headers(reply.content_type.encode(), route, rid, extra=STREAM_HEADERS),
                    }
                )
                await self._relay(routed, data, path, deadline, send, receive, rec)
            else:
                assert reply.body is not None
                routed.finish()  # the answer is all here: the upstream slot is free before the client reads it
                rec.set_usage(reply.usage)
                if rec.route == "cloud":
                    rec.cloud_prompt_tokens = token_count(reply.usage, "prompt_tokens", estimated_tokens(len(body)))
                    rec.cloud_completion_tokens = rec.completion_tokens
                    await self._charge(rec)  # before the client has it: its next request sees the spend
                responded = True
                await send_whole(
                    send,
                    reply.status,
                    reply.content_type.encode(),
                    route,
                    rid,
                    reply.body,
                    retry_after=reply.retry_after if reply.status >= 400 else None,
                )
                if cache_key is not None and reply.status == 200 and self.cache is not None:
                    self.cache.put(cache_key, reply.body, reply.content_type, routed.route)
        except RouterError as exc:
            rec.status, rec.error = exc.status, exc.code
            if exc.route == "cloud":  # it did leave: say so in the header, the audit and the metrics
                rec.route, rec.upstream, rec.fallback_reason = "cloud", "cloud", exc.fallback_reason
            if exc.status == 401:
                self.metrics.auth_failure()
            await send_error(send, exc, exc.route.encode(), rid)
        except ClientGone:
            rec.status, rec.error = 499, "client_disconnected"  # nginx's code: nothing could be sent
        except Exception as exc:  # a router bug: answer in the OpenAI shape, keep the trace in the log
            rec.error = "internal_error"
            traceback.print_exception(exc, file=sys.stderr)
            if not responded:  # a started response cannot change its status; the client sees it cut
                rec.status = 500
                await send_error(
                    send,
                    RouterError(500, f"Internal router error (request {rec.request_id})."),
                    rec.route.encode(),
                    rid,
                )
        finally:
            if routed is not None:
                routed.finish()
            seconds = time.perf_counter() - started
            rec.latency_ms = round(seconds * 1000.0, 3)
            if routed is None and rec.failures:
                rec.attempts = len(rec.failures)
            await self._charge(rec)  # streams (and what else left): once their usage is known
            self.metrics.request(rec, seconds)
            self.audit.record(rec.fields(), data)

    async def _route(
        self,
        scope: dict[str, Any],
        receive: Any,
        path: str,
        body: bytes,
        data: dict[str, Any],
        stream: bool,
        data_class: str,
        deadline: float,
        rec: RequestRecord,
        rid: bytes,
        cloud_refusal: RouterError | None = None,
    ) -> Routed:
        """``fallback.route``, cancelled (and ClientGone raised) if the client leaves while it waits."""
        task = asyncio.current_task()
        conn = watch_disconnect(scope, task)
        gone = None
        if conn is None:  # not run by our uvicorn protocol: watch the ASGI receive channel instead
            gone = asyncio.ensure_future(receive())
            gone.add_done_callback(lambda f: task.cancel() if task is not None and not f.cancelled() else None)
        try:
            return await self.fallback.route(
                path,
                body,
                data,
                stream,
                data_class,
                deadline,
                rec.failures,
                rid,
                cloud_refusal=cloud_refusal,
                record=rec,
            )
        except asyncio.CancelledError:
            left = conn.client_left if conn is not None else (gone is not None and gone.done() and not gone.cancelled())
            if not left or task is None:
                raise
            task.uncancel()
            raise ClientGone from None
        finally:
            if conn is not None:
                conn.waiting_task = None
            if gone is not None:
                gone.cancel()

    async def _relay(
        self,
        routed: Routed,
        data: dict[str, Any],
        path: str,
        deadline: float,
        send: Any,
        receive: Any,
        rec: RequestRecord,
    ) -> None:
        timeouts = self.config.timeouts
        cloud, up = self.cloud, routed.upstream
        continuer: Continuer | None = None
        if (
            routed.route == "local"
            and routed.cloud_model is not None
            and cloud is not None
            and cloud.continues_streams
            and path == CHAT_PATH
        ):
            cloud_model = routed.cloud_model

            async def continuer(so_far: ChatStream) -> Reply:
                self.metrics.fallback(STREAM_CONTINUED)
                refusal = await self._hold(rec, data, cloud_model, so_far.tokens)
                if refusal is not None:  # the budget is spent by now: the stream ends as it broke off
                    raise AttemptFailed(refusal.code or BUDGET_EXHAUSTED)
                return await cloud.continue_stream(data, cloud_model, so_far, deadline)

        options = data.get("stream_options")
        plan = StreamPlan(
            idle_s=timeouts.stream_idle_s,
            stall_s=timeouts.stream_stall_s,
            deadline=deadline,
            client_wants_usage=isinstance(options, dict) and options.get("include_usage") is True,
            max_bytes=self.config.limits.max_answer_bytes,
            continuer=continuer,
            watchers=up.streams if up is not None else None,
        )
        outcome = await StreamRelay(send, receive, plan, routed.upstream_label).run(routed.reply)
        rec.failures.extend(outcome.failures)
        rec.error = outcome.error
        if outcome.error is not None and outcome.error != "client_disconnected":
            self.metrics.stream_error(routed.route)
        rec.set_usage(outcome.usage, outcome.tokens)
        if outcome.continuation is not None:
            rec.continuation, rec.fallback_reason = outcome.continuation, outcome.continued_reason
        if outcome.cloud_called:  # the cloud continued the stream: billed, even when its part was cut
            rec.cloud_model = routed.cloud_model
            # without its usage, its prompt (the request and the local part it continued) is estimated from
            # their size, never counted as free
            unknown = estimated_tokens(rec.request_bytes) + outcome.prefix_tokens
            rec.cloud_prompt_tokens = token_count(outcome.cloud_usage, "prompt_tokens", unknown)
            rec.cloud_completion_tokens = token_count(outcome.cloud_usage, "completion_tokens", outcome.cloud_tokens)
        elif routed.route == "cloud":
            rec.cloud_prompt_tokens = token_count(outcome.usage, "prompt_tokens", estimated_tokens(rec.request_bytes))
            rec.cloud_completion_tokens = rec.completion_tokens

    async def _read_body_in_time(self, receive: Any, content_length: int) -> bytes:
        """The body, or a 408 when it has not all arrived within ``timeouts.body_s`` (swept, no timer)."""
        deadlines = self.body_deadlines
        task = deadlines.begin(time.monotonic())
        try:
            return await self._read_body(receive, content_length)
        except asyncio.CancelledError:
            if not deadlines.end(task):
                raise
            assert task is not None
            task.uncancel()
            raise RouterError(
                408,
                f"The request body did not arrive within {deadlines.seconds:g} s (timeouts.body_s).",
                code="request_timeout",
            ) from None
        finally:
            deadlines.end(task)  # every way out, a too-large body included, leaves no entry behind

    async def _read_body(self, receive: Any, content_length: int) -> bytes:
        limit = self.config.limits.max_body_bytes
        if content_length > limit:
            raise RouterError(
                400,
                f"Request body of {content_length} bytes exceeds the limit of {limit} bytes (limits.max_body_bytes).",
                code="body_too_large",
            )
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
