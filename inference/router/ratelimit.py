"""Per-key requests-per-minute limits (token bucket; refused requests get 429 with Retry-After)."""

from __future__ import annotations

import time


class RateLimiter:
    """One bucket per key id: ``rpm`` tokens of capacity, refilled at ``rpm / 60`` per second."""

    def __init__(self) -> None:
        self._buckets: dict[str, list[float]] = {}  # key id -> [tokens, last refill time]

    def acquire(self, key_id: str, rpm: int, now: float | None = None) -> float | None:
        """Take one request from the key's bucket; return None if allowed, else seconds to wait."""
        if now is None:
            now = time.monotonic()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = [float(rpm), now]
        tokens = min(float(rpm), bucket[0] + (now - bucket[1]) * rpm / 60.0)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return None
        bucket[0] = tokens
        return (1.0 - tokens) * 60.0 / rpm
