"""The audit record of one request, filled in as the request goes (one typed place for every field)."""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Any

_ID_PREFIX = os.urandom(8).hex()  # per process; with a counter: unique ids without uuid4's cost
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


# Prompt tokens estimated from the request body's size, where no upstream has counted them: the first-byte
# budget of a stream (fallback.py) and the spend of a cloud stream cut before its usage (few tokenizers get
# more than 3.5 characters into a token, so 3 errs towards more tokens: more time, a higher charge).
CHARS_PER_TOKEN = 3.0


def estimated_tokens(n_bytes: int) -> int:
    return math.ceil(n_bytes / CHARS_PER_TOKEN)


def requested_completion_tokens(data: dict[str, Any]) -> int:
    """The most completion tokens a request asks for (``max_completion_tokens`` first, as the API); 0: no bound."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = data.get(key)
        if type(value) is int and value > 0:
            return value
    return 0


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
    cloud_refused: str | None = None  # why it could not leave: budget_exhausted, budget_unavailable (budgets)
    queued_ms: float | None = None  # time it waited for a ready local engine (wait_queue); None: it did not wait
    queued_reason: str | None = None  # why it waited (no_local_upstream, all_circuits_open, connect_refused, ...)
    cloud_model: str | None = None  # not audited: the cloud model whose prices the spend metric uses
    cloud_prompt_tokens: int = 0  # not audited: the cloud's share of the tokens (spend)
    cloud_completion_tokens: int = 0
    request_bytes: int = 0  # not audited: the body's size (the prompt estimate when no usage came)
    charged: bool = False  # not audited: the cloud spend is in the budgets
    budget_held: int = 0  # not audited: nano-USD the budgets hold for it since it left (budgets.hold)

    def set_usage(self, usage: dict[str, Any] | None, completion_default: int = 0) -> None:
        self.prompt_tokens = token_count(usage, "prompt_tokens")
        self.completion_tokens = token_count(usage, "completion_tokens", completion_default)

    def fields(self) -> tuple[Any, ...]:
        return (
            self.request_id,
            self.time,
            self.key_id,
            self.tenant,
            self.data_class,
            self.method,
            self.path,
            self.model,
            self.stream,
            self.route,
            self.upstream,
            self.status,
            self.prompt_tokens,
            self.completion_tokens,
            self.latency_ms,
            self.fallback_reason,
            self.attempts,
            self.failures,
            self.cache,
            self.error,
            self.continuation,
            self.cloud_refused,
            self.queued_ms,
            self.queued_reason,
        )
