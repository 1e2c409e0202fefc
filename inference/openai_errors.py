"""The OpenAI error ``type`` for each HTTP status, declared once for the router and the model server.

The OpenAI API documents the error object as ``{"error": {"message", "type", "param", "code"}}``
(https://platform.openai.com/docs/guides/error-codes); clients branch on the HTTP status, and people read
``type``. Both of dsdeploy's servers answer with the same word for the same status, so a client (or an
alert) sees one vocabulary whichever of them answered. A leaf module: it imports nothing.
"""

from __future__ import annotations

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


def error_type(status: int) -> str:
    """The ``type`` for an error answered with ``status``: the table's, else by class (4xx, 5xx)."""
    return ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
