"""ASGI middleware the chart gives vLLM (``--middleware=engine_key_guard.EngineKeyGuard``): every path except
``/health`` and ``/metrics`` needs ``Authorization: Bearer <the engine key>``.

Why not vLLM's own ``--api-key`` alone: in vLLM 0.32 it guards only the paths under ``/v1``, ``/v2``,
``/inference`` and ``/cohere`` (``GUARDED_PREFIX`` in vllm/entrypoints/serve/middleware/authenticate.py), and
its help text says that ``/invocations``, which serves the same inference as ``/v1``, "remain[s]
unauthenticated" (``api_key`` in vllm/entrypoints/launchers/cli_args.py). The engine port is open to the
router and to the monitoring namespace (scraping); without this guard a caller there could skip the router's
auth, limits, policy and audit through ``/invocations``. vLLM adds a class given to ``--middleware`` with
``app.add_middleware(cls)`` (vllm/entrypoints/serve/middleware/register.py), so the key is read from the
environment (``VLLM_API_KEY``, the variable vLLM itself reads, set from the chart's Secret).

Standard library only: it runs inside the vLLM image, shipped in the chart's ConfigMap.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

KEY_ENV = "VLLM_API_KEY"
# What the kubelet's probes and Prometheus read; both answer without the key and hold no prompt or answer.
OPEN_PATHS = frozenset({"/health", "/metrics"})
_BODY = json.dumps(
    {
        "error": {
            "message": "Missing or incorrect engine API key: the engine answers the router only.",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
).encode()


class EngineKeyGuard:
    """Refuses (401) any request without the engine key, except on ``OPEN_PATHS``; compares in constant time."""

    def __init__(self, app) -> None:
        key = os.environ.get(KEY_ENV, "")
        if not key:
            raise RuntimeError(f"{KEY_ENV} is empty: the engine does not start without its API key")
        self.app = app
        self._digest = hashlib.sha256(key.encode()).digest()

    def _authorized(self, scope) -> bool:
        value = b""
        for name, raw in scope.get("headers") or ():
            if name == b"authorization":
                value = raw
                break
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(hashlib.sha256(token.strip()).digest(), self._digest)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "").removeprefix(scope.get("root_path", "")) or "/"
        if path in OPEN_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect; closing before accept refuses the handshake (403)
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_BODY)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _BODY})
