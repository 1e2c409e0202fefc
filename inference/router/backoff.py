"""Exponential backoff with full jitter, capped, honouring Retry-After (shared with inference/client.py)."""

from __future__ import annotations

import math
import random
import time
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_S = (
    86_400.0  # a Retry-After beyond a day is read as a day (``inf``, ``1e300``: not a number of seconds)
)


def backoff_delay(
    attempt: int, base_s: float, cap_s: float, retry_after_s: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (attempt counts from 0).

    Full jitter: ``uniform(0, min(cap, base * 2**attempt))``. A server's ``Retry-After`` wins
    when given, still capped at ``cap_s`` (callers do not retry at all when it asks for more than
    the cap: see ``asks_too_long``).
    """
    if retry_after_s is not None:
        return max(0.0, min(cap_s, retry_after_s))
    ceiling = min(cap_s, base_s * (2.0 ** min(attempt, 30)))
    return (rng or random).uniform(0.0, ceiling)


def asks_too_long(retry_after_s: float | None, cap_s: float) -> bool:
    """True when a server's ``Retry-After`` exceeds the backoff cap: retrying sooner than it asked is
    pointless, so the caller gives up and passes the answer (with its ``Retry-After``) on instead."""
    return retry_after_s is not None and retry_after_s > cap_s


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date, at most ``MAX_RETRY_AFTER_S``; None when
    absent or unreadable (``nan``, ``inf`` and ``-inf`` are unreadable, ``1e300`` is a day)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return min(MAX_RETRY_AFTER_S, max(0.0, seconds)) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, when.timestamp() - (now if now is not None else time.time())))


def retry_after_header(seconds: float) -> bytes:
    """A ``Retry-After`` value the client can act on: whole seconds, at least 1, at most a day."""
    return b"%d" % max(1, math.ceil(min(MAX_RETRY_AFTER_S, seconds)))
