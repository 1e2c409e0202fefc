"""The router's own endpoints: ``/health``, ``/ready``, ``/metrics``, ``GET /v1/models`` and
``GET /v1/models/{model}``; another method on one of them is a 405 with ``Allow``.

``/ready`` answers any caller with its status code and ``{"ready": ...}``; the upstreams' addresses and
circuit states only go to a caller with a router key (or to anyone while auth is off, on loopback).
``/metrics`` (cloud spend, upstream addresses) asks for a router key when ``metrics.require_key`` is set.
``/v1/models`` (and one model) takes a key and counts against its requests per minute like a completion.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from inference.router.errors import RouterError
from inference.router.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from inference.router.record import new_request_id
from inference.router.request_head import first_header
from inference.router.responses import JSON, LOCAL, Send, send_error, send_whole

if TYPE_CHECKING:
    from inference.router.app import RouterApp


async def serve_other(app: RouterApp, scope: dict[str, Any], send: Send, path: str) -> None:
    rid = new_request_id().encode()
    method = scope["method"]
    try:
        if path == "/health" and method in ("GET", "HEAD"):
            await send_whole(send, 200, JSON, LOCAL, rid, b'{"status":"ok"}')
        elif path == "/ready" and method in ("GET", "HEAD"):
            ready = app.started and (app.pool.any_available or app.cloud is not None)
            shown: dict[str, Any] = {"ready": ready}
            if not app.auth.enabled or _has_key(app, scope):
                shown["upstreams"] = app.upstream_states()
            await send_whole(send, 200 if ready else 503, JSON, LOCAL, rid, json.dumps(shown).encode())
        elif path == "/metrics" and method == "GET" and app.config.metrics.enabled:
            if app.config.metrics.require_key:
                app.auth.authenticate(first_header(scope, b"authorization"))
            app.metrics.audit_dropped = app.audit.dropped
            await send_whole(send, 200, METRICS_CONTENT_TYPE.encode(), LOCAL, rid, app.metrics.render())
        elif path == "/v1/models" and method == "GET":
            principal = app.auth.authenticate(first_header(scope, b"authorization"))
            await app.rate_limit(principal)
            from inference.router.models import list_models  # small, used rarely

            status, body, route = await list_models(app)
            await send_whole(send, status, JSON, route.encode(), rid, body)
        elif path.startswith(MODEL_PREFIX) and method == "GET":
            principal = app.auth.authenticate(first_header(scope, b"authorization"))
            await app.rate_limit(principal)
            from inference.router.models import retrieve_model

            status, body, route = await retrieve_model(app, path[len(MODEL_PREFIX) :])
            await send_whole(send, status, JSON, route.encode(), rid, body)
        elif (allowed := allowed_methods(app, path)) is not None:
            raise RouterError(405, f"Use {' or '.join(allowed.split(', '))} for {path}.", allow=allowed)
        else:
            raise RouterError(404, f"No route for {method} {path}.", code="not_found")
    except RouterError as exc:
        if exc.status == 401:
            app.metrics.auth_failure()
        await send_error(send, exc, LOCAL, rid)


MODEL_PREFIX = "/v1/models/"
# The methods each of these paths answers (sent as a 405's Allow header); the completion paths take POST.
_METHODS = {"/health": "GET, HEAD", "/ready": "GET, HEAD", "/metrics": "GET", "/v1/models": "GET"}


def allowed_methods(app: RouterApp, path: str) -> str | None:
    """The ``Allow`` value for a path the router serves with other methods; None for one it does not serve."""
    if path == "/metrics" and not app.config.metrics.enabled:
        return None
    if path.startswith(MODEL_PREFIX):
        return "GET"
    return _METHODS.get(path)


def _has_key(app: RouterApp, scope: dict[str, Any]) -> bool:
    try:
        app.auth.authenticate(first_header(scope, b"authorization"))
    except RouterError:
        return False
    return True
