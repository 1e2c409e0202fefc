"""Audit log: one JSON line per request, buffered and written off the request path.

Lines never hold API keys (only key ids); prompt content is left out by default, or hashed, or
written in full, per ``audit.prompts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

from inference.router.config import AuditConfig

AUDIT_FIELDS = (
    "request_id", "time", "key_id", "tenant", "data_class", "method", "path", "model", "stream",
    "route", "upstream", "status", "prompt_tokens", "completion_tokens", "latency_ms",
    "fallback_reason", "attempts", "failures", "cache", "error",
)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
_TEMPLATE = dict.fromkeys(AUDIT_FIELDS)


def new_record() -> dict[str, Any]:
    """A record with every audit field present (None until set)."""
    return _TEMPLATE.copy()


def prompt_content(data: dict[str, Any] | None) -> Any:
    if not data:
        return None
    if "messages" in data:
        return data["messages"]
    return data.get("prompt")


class AuditLog:
    """Collects records in memory; a background task writes them every ``flush_interval_s``."""

    def __init__(self, config: AuditConfig, stream: TextIO | None = None) -> None:
        self.config = config
        self._buffer: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        self._stream = stream
        self._owns_stream = False
        self._task: asyncio.Task[None] | None = None
        self._second = -1
        self._second_text = ""
        self._lock = threading.Lock()

    def record(self, fields: dict[str, Any], request_data: dict[str, Any] | None) -> None:
        """Queue one record (cheap: the JSON is built later, outside the request)."""
        if self.config.enabled:
            self._buffer.append((fields, request_data))

    async def start(self) -> None:
        if not self.config.enabled:
            return
        if self._stream is None:
            if self.config.path == "-":
                self._stream = sys.stdout
            else:
                self._stream = open(self.config.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in stop)
                self._owns_stream = True
        self._task = asyncio.create_task(self._run(), name="audit flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()
        with self._lock:
            if self._owns_stream and self._stream is not None:
                self._stream.close()
                self._stream = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            if not self._buffer:
                continue
            batch, self._buffer = self._buffer, []
            try:  # rendering and the write happen in a thread: no stall of the event loop on a slow disk
                await asyncio.to_thread(self._write, batch)
            except OSError as exc:  # a full disk must not take the router down
                print(f"audit: write failed: {exc}", file=sys.stderr)

    def _time(self, t: float) -> str:
        second = int(t)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((t - second) * 1000):03d}Z"

    def render(self, fields: dict[str, Any], request_data: dict[str, Any] | None) -> str:
        """One JSON line; ``fields`` should hold every name in AUDIT_FIELDS (see ``new_record``)."""
        line = fields if len(fields) >= len(AUDIT_FIELDS) else {**dict.fromkeys(AUDIT_FIELDS), **fields}
        if isinstance(line["time"], float):
            line["time"] = self._time(line["time"])
        mode = self.config.prompts
        if mode != "off":
            content = prompt_content(request_data)
            if mode == "hash":
                canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                line["prompt_sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
            else:
                line["prompt"] = content
        return _ENCODER.encode(line)

    def flush(self) -> None:
        """Write what is buffered now (used at shutdown; the background task does the same in a thread)."""
        if not self._buffer or self._stream is None:
            return
        batch, self._buffer = self._buffer, []
        self._write(batch)

    def _write(self, batch: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
        with self._lock:
            if self._stream is None:
                return
            self._stream.write("".join(self.render(f, d) + "\n" for f, d in batch))
            self._stream.flush()
