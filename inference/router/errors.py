"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import json

from inference.openai_errors import error_type


class RouterError(Exception):
    """An error the router answers itself; never carries secrets."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        route: str = "local",
        fallback_reason: str | None = None,
        allow: str | None = None,
    ) -> None:
        super().__init__(message)
        self.route = route  # "cloud" when the request did leave for the cloud before this error
        self.fallback_reason = fallback_reason
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.allow = allow  # a 405's methods, sent as the Allow header (RFC 9110 section 15.5.6 requires it)

    def body(self) -> bytes:
        return error_body(self.status, self.message, code=self.code, param=self.param)


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> bytes:
    payload = {
        "error": {
            "message": message,
            "type": error_type(status),
            "param": param,
            "code": code,
        }
    }
    return json.dumps(payload).encode()


def stream_error_event(message: str, code: str) -> bytes:
    """The SSE event that ends a stream which failed after its first byte reached the client."""
    payload = {"error": {"message": message, "type": error_type(502), "param": None, "code": code}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
