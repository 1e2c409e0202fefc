"""Exact-match answer cache for deterministic requests, bounded in bytes, with a TTL, per tenant."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    body: bytes
    content_type: str
    route: str
    expires: float


def is_deterministic(data: dict[str, Any]) -> bool:
    """Temperature 0 (stated), not streamed, one choice."""
    return not data.get("stream") and data.get("temperature") in (0, 0.0) and data.get("n") in (None, 1)


ENTRY_OVERHEAD = 512  # bytes an entry holds besides its body: key tuple and digest, record, LRU links


def entry_size(entry: CachedAnswer) -> int:
    return len(entry.body) + len(entry.content_type) + len(entry.route) + ENTRY_OVERHEAD


class ResponseCache:
    """LRU over (tenant, path, canonical request); one tenant never reads another tenant's entries.

    ``max_bytes`` bounds what the entries hold in all: bodies and a fixed overhead per entry, so that many
    tiny answers cannot outgrow it."""

    def __init__(self, max_bytes: int, ttl_s: float) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, str, bytes], CachedAnswer] = OrderedDict()

    @staticmethod
    def key(tenant: str, path: str, data: dict[str, Any]) -> tuple[str, str, bytes]:
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return (tenant, path, hashlib.sha256(canonical.encode()).digest())

    def get(self, key: tuple[str, str, bytes], now: float | None = None) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if (now if now is not None else time.monotonic()) >= entry.expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(
        self, key: tuple[str, str, bytes], body: bytes, content_type: str, route: str, now: float | None = None
    ) -> None:
        now = now if now is not None else time.monotonic()
        entry = CachedAnswer(body, content_type, route, now + self.ttl_s)
        size = entry_size(entry)
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = entry
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[str, str, bytes]) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry_size(entry)

    def __len__(self) -> int:
        return len(self._entries)
