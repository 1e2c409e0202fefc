"""The server's API key (``dsdeploy serve --api-key`` or ``$DSDEPLOY_ENGINE_KEY``, config.API_KEY_ENV): the router holds it, and
every path except the probes' and Prometheus' (``/health``, ``/ready``, ``/metrics``) answers 401 without it.

The key is compared in constant time (``hmac.compare_digest`` over SHA-256 digests, so neither the length nor
a prefix of the key shows in the timing). It is checked before the request body is read.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The token of the first ``Authorization: Bearer <token>`` header; None when there is none."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


class EngineKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._digest = hashlib.sha256(api_key.encode()).digest()

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        token = bearer_token(headers)
        return token is not None and hmac.compare_digest(hashlib.sha256(token).digest(), self._digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self.authorized(scope.get("headers") or []):
            await self.app(scope, receive, send)
            return
        missing = bearer_token(scope.get("headers") or []) is None
        message = "Missing API key: send 'Authorization: Bearer <key>'." if missing else "Incorrect API key provided."
        await error_response(
            401, message, None, "missing_api_key" if missing else "invalid_api_key", {"WWW-Authenticate": "Bearer"}
        )(scope, receive, send)
