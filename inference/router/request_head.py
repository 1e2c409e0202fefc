"""What the router reads from a completion request's headers, and the checks made on them before its body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inference.router.errors import RouterError


@dataclass(slots=True)
class RequestHead:
    authorization: bytes | None = None
    data_class: bytes | None = None  # repeated headers joined with "," (the strictest one counts)
    content_length: int = -1
    content_type: bytes | None = None
    origin: bytes | None = None
    repeated_auth: bool = False

    @classmethod
    def read(cls, headers: list[tuple[bytes, bytes]]) -> RequestHead:
        head = cls()
        for name, value in headers:
            if name == b"authorization":
                head.repeated_auth = head.authorization is not None
                head.authorization = value
            elif name == b"x-data-class":
                # repeated (a gateway stamps one, the client sends another): the strictest one counts
                head.data_class = value if head.data_class is None else head.data_class + b"," + value
            elif name == b"content-length":
                head.content_length = int(value) if value.isdigit() else -1
            elif name == b"content-type":
                head.content_type = value
            elif name == b"origin":
                head.origin = value
        return head

    def check(self, allowed_origins: frozenset[bytes]) -> None:
        """Refuse what a browser on another site could send without asking first (a CORS "simple" request):
        a foreign ``Origin``, and any body type but JSON, which makes a browser ask (as the model server does)."""
        if self.repeated_auth:
            raise RouterError(
                400,
                "More than one Authorization header; send exactly one.",
                code="invalid_api_key",
                param="Authorization",
            )
        if self.origin is not None and self.origin not in allowed_origins:
            shown = self.origin.decode("latin-1")[:80]
            raise RouterError(
                403,
                f"Requests from web origin {shown!r} are not allowed (server.allowed_origins).",
                code="origin_not_allowed",
                param="Origin",
            )
        media = (self.content_type or b"").split(b";", 1)[0].strip().lower()
        if media != b"application/json" and not (media.startswith(b"application/") and media.endswith(b"+json")):
            shown = f"'{media.decode('latin-1')[:60]}'" if media else "none"
            raise RouterError(
                415,
                f"The request body must be JSON sent with Content-Type: application/json (got {shown}).",
                code="unsupported_media_type",
                param="Content-Type",
            )


def origins(values: list[str]) -> frozenset[bytes]:
    return frozenset(v.encode("latin-1") for v in values)


def first_header(scope: dict[str, Any], name: bytes) -> bytes | None:
    return next((v for k, v in scope["headers"] if k == name), None)
