"""The audit record of one request, filled in as the request goes (one typed place for every field)."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

_ID_PREFIX = os.urandom(8).hex()  # per process; with a counter: unique ids without uuid4's cost
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def token_count(usage: dict[str, Any] | None, key: str, default: int = 0) -> int:
    """A token count from an upstream's ``usage``; what is not a non-negative integer counts as unknown."""
    value = usage.get(key) if usage else None
    return value if type(value) is int and value >= 0 else default


@dataclass(slots=True)
class RequestRecord:
    """The values of ``audit.AUDIT_FIELDS``, in that order (``fields()``), plus what the metrics need."""

    request_id: str
    time: float
    path: str
    method: str = "POST"
    key_id: str | None = None
    tenant: str | None = None
    data_class: str | None = None
    model: str | None = None
    stream: bool | None = None
    route: str = "local"
    upstream: str | None = None
    status: int = 500
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    fallback_reason: str | None = None
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    cache: str | None = None
    error: str | None = None
    continuation: str | None = None  # "cloud": the cloud wrote the rest of a stream the local engine broke off
    cloud_model: str | None = None  # not audited: the cloud model whose prices the spend metric uses
    cloud_prompt_tokens: int = 0  # not audited: the cloud's share of the tokens (spend)
    cloud_completion_tokens: int = 0

    def set_usage(self, usage: dict[str, Any] | None, completion_default: int = 0) -> None:
        self.prompt_tokens = token_count(usage, "prompt_tokens")
        self.completion_tokens = token_count(usage, "completion_tokens", completion_default)

    def fields(self) -> tuple[Any, ...]:
        return (self.request_id, self.time, self.key_id, self.tenant, self.data_class, self.method, self.path,
                self.model, self.stream, self.route, self.upstream, self.status, self.prompt_tokens,
                self.completion_tokens, self.latency_ms, self.fallback_reason, self.attempts, self.failures,
                self.cache, self.error, self.continuation)
