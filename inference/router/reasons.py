"""Why a request left its local upstream: every reason name, declared once.

The same names are the ``reason`` label of ``dsdeploy_router_fallbacks_total`` and
``dsdeploy_router_local_failures_total``, the audit record's ``fallback_reason`` and ``failures``
entries (``upstream:reason``), and the table in docs/operations.md (a test holds the two equal).
"""

from __future__ import annotations

# One attempt on one upstream failed (proxy.py raises AttemptFailed with one of these).
CONNECT_REFUSED = "connect_refused"
CONNECT_ERROR = "connect_error"
RESET = "connection_reset"
FIRST_BYTE_TIMEOUT = "first_byte_timeout"
RESPONSE_TIMEOUT = "response_timeout"
UPSTREAM_5XX = "upstream_5xx"
# It answered that it is shutting down (SIGTERM: a rollout, a scale-in): it finishes what it has open and
# takes no new work; out of the pool at once, as after a 5xx readiness probe (proxy.is_draining_answer).
UPSTREAM_DRAINING = "upstream_draining"
UPSTREAM_429 = "upstream_429"
MALFORMED = "malformed_response"
UNRESPONSIVE = "unresponsive"
TOO_LARGE = "answer_too_large"
REDIRECT = "upstream_redirect"
CONTEXT_LENGTH = "context_length_exceeded"
# A local engine refused the router's own key (upstreams[].api_key): clients' keys never go to engines,
# so passing its 401 on would tell the client that its key is wrong.
LOCAL_KEY_REJECTED = "local_key_rejected"

# The pool could not give a local upstream (pool.py).
ALL_CIRCUITS_OPEN = "all_circuits_open"
SATURATED = "saturated"
OVER_TTFT_TARGET = "ttft_target"  # every engine's estimated time to first token is over slo.ttft_s
NO_LOCAL = "no_local_upstream"
EXHAUSTED = "local_attempts_exhausted"
# No attempt said why (the last resort of the fallback chain).
LOCAL_UNAVAILABLE = "local_unavailable"

# A local stream broke off mid-answer (streaming.py); the cloud may continue it.
STREAM_INTERRUPTED = "stream_interrupted"
STREAM_STALLED = "stream_stalled"
STREAM_CONTINUED = "stream_continued"  # the fallback counted when the cloud continued a broken stream

ATTEMPT_FAILURES: tuple[str, ...] = (
    CONNECT_REFUSED,
    CONNECT_ERROR,
    RESET,
    FIRST_BYTE_TIMEOUT,
    RESPONSE_TIMEOUT,
    UPSTREAM_5XX,
    UPSTREAM_DRAINING,
    UPSTREAM_429,
    MALFORMED,
    UNRESPONSIVE,
    TOO_LARGE,
    REDIRECT,
    CONTEXT_LENGTH,
    LOCAL_KEY_REJECTED,
)
POOL_REASONS: tuple[str, ...] = (ALL_CIRCUITS_OPEN, SATURATED, OVER_TTFT_TARGET, NO_LOCAL, EXHAUSTED)
STREAM_REASONS: tuple[str, ...] = (STREAM_INTERRUPTED, STREAM_STALLED)
# Every value the `reason` of dsdeploy_router_fallbacks_total may take.
FALLBACK_REASONS: tuple[str, ...] = (*ATTEMPT_FAILURES, *POOL_REASONS, LOCAL_UNAVAILABLE, STREAM_CONTINUED)
