"""Data-class policy: which requests may leave the premises for the cloud."""

from __future__ import annotations

from inference.router.config import DATA_CLASSES, RouterConfig, strictest
from inference.router.errors import RouterError

_VALID = {c.encode(): c for c in DATA_CLASSES}


class DataClassPolicy:
    def __init__(self, config: RouterConfig) -> None:
        self.cloud_configured = config.cloud is not None
        self._allowed = frozenset(config.policy.cloud_allowed)

    def resolve(self, header: bytes | None, default_class: str) -> str:
        """The request's class: its X-Data-Class header, else the key's (or policy's) default.

        A repeated header (or a comma-separated list) resolves to the strictest class it names, so a
        client cannot loosen a class that a gateway in front has stamped."""
        if header is None:
            return default_class
        cls = _VALID.get(header.strip().lower())
        if cls is not None:
            return cls
        if b"," in header:
            return strictest(*(self.resolve(part, default_class) for part in header.split(b",")))
        shown = header.decode("latin-1")[:40]
        raise RouterError(
            400,
            f"X-Data-Class {shown!r} is not one of {', '.join(DATA_CLASSES)}.",
            code="invalid_data_class",
            param="X-Data-Class",
        )

    def may_leave(self, data_class: str) -> bool:
        return self.cloud_configured and data_class in self._allowed

    def refusal(self, data_class: str, reason: str) -> RouterError:
        """The 503 for a request the local pool cannot serve and the cloud may not take."""
        if not self.cloud_configured:
            why = "no cloud fallback is configured"
        else:
            why = f"data class '{data_class}' may not leave the premises (cloud allowed for: {', '.join(sorted(self._allowed)) or 'none'})"
        return RouterError(
            503,
            f"The local model pool is unavailable ({reason}) and {why}.",
            code="local_pool_unavailable",
            retry_after=1.0,
        )
