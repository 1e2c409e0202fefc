"""Audit log: one JSON line per request, buffered and written off the request path.

Lines never hold API keys (only key ids); prompt content is left out by default, or hashed, or
written in full, per ``audit.prompts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

from inference.router.config import AuditConfig

AUDIT_FIELDS = (
    "request_id",
    "time",
    "key_id",
    "tenant",
    "data_class",
    "method",
    "path",
    "model",
    "stream",
    "route",
    "upstream",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "fallback_reason",
    "attempts",
    "failures",
    "cache",
    "error",
    "continuation",
    "cloud_refused",
    "queued_ms",
    "queued_reason",
)
# A record is a tuple of these values, in this order (``record.RequestRecord.fields()``); ``time`` is the
# epoch float, rendered as ISO 8601 UTC with milliseconds when the line is written.
Record = tuple[Any, ...]

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
_quote = json.encoder.encode_basestring  # C; the same escaping as _ENCODER's (ensure_ascii=False)
_STR_OR_NONE = {str, type(None)}
_BOOL_OR_NONE = (bool, type(None))
N = "null"
_KEYS = [f'{"," if i else "{"}"{name}":' for i, name in enumerate(AUDIT_FIELDS)]


def _value(v: Any) -> str:
    """``v`` as _ENCODER would write it (the usual types without the encoder's call overhead)."""
    if v is None:
        return "null"
    t = type(v)
    if t is str:
        return _quote(v)
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return int.__repr__(v)
    if t is float and math.isfinite(v):
        return float.__repr__(v)
    if t is list and all(type(x) is str for x in v):
        return "[" + ",".join(map(_quote, v)) + "]"
    return _ENCODER.encode(v)


def prompt_content(data: dict[str, Any] | None) -> Any:
    if not data:
        return None
    if "messages" in data:
        return data["messages"]
    return data.get("prompt")


class AuditLog:
    """Collects records in memory; a background task writes them every ``flush_interval_s``.

    At most ``audit.max_buffered`` records wait for the writer (a disk that stalls must not take the router's
    memory with it): beyond that, records are dropped and counted (``dropped``, a metric), and said on stderr.
    """

    def __init__(self, config: AuditConfig, stream: TextIO | None = None) -> None:
        self.config = config
        self.dropped = 0
        self._buffer: list[tuple[Record, dict[str, Any] | None]] = []
        self._keep_prompts = config.prompts != "off"
        self._stream = stream
        self._owns_stream = False
        self._task: asyncio.Task[None] | None = None
        self._second = -1
        self._second_text = ""
        self._lock = threading.Lock()

    def record(self, fields: Record, request_data: dict[str, Any] | None) -> None:
        """Queue one record: the values of AUDIT_FIELDS in order (cheap: the JSON is built later, off the
        request path); ``request_data`` (the parsed body) is kept only when prompts are logged."""
        if self.config.enabled:
            if len(self._buffer) >= self.config.max_buffered:
                if not self.dropped:
                    print(
                        f"audit: {len(self._buffer)} records wait for the writer; dropping new ones "
                        "(dsdeploy_router_audit_dropped_total counts them)",
                        file=sys.stderr,
                    )
                self.dropped += 1
                return
            self._buffer.append((fields, request_data if self._keep_prompts else None))

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
            except Exception as exc:  # a full disk (or a bug in one record) must not stop the writer for good
                print(f"audit: writing {len(batch)} records failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _time(self, t: float) -> str:
        second = int(t)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((t - second) * 1000):03d}Z"

    def render(self, fields: Record, request_data: dict[str, Any] | None) -> str:
        """One JSON line: the AUDIT_FIELDS in order, then ``prompt_sha256`` or ``prompt`` per ``audit.prompts``."""
        (
            request_id,
            t,
            key_id,
            tenant,
            data_class,
            method,
            path,
            model,
            stream,
            route,
            upstream,
            status,
            prompt_tokens,
            completion_tokens,
            latency_ms,
            fallback_reason,
            attempts,
            failures,
            cache,
            error,
            continuation,
            cloud_refused,
            queued_ms,
            queued_reason,
        ) = fields
        if (
            type(t) is float
            and type(stream) in _BOOL_OR_NONE
            and {
                type(request_id),
                type(key_id),
                type(tenant),
                type(data_class),
                type(method),
                type(path),
                type(model),
                type(route),
                type(upstream),
                type(fallback_reason),
                type(cache),
                type(error),
                type(continuation),
                type(cloud_refused),
                type(queued_reason),
            }
            <= _STR_OR_NONE
            and (queued_ms is None or type(queued_ms) is float)
            and type(status) is int
            and type(prompt_tokens) is int
            and type(completion_tokens) is int
            and type(latency_ms) is float
            and type(attempts) is int
            and type(failures) is list
        ):
            # the types the request path produces: one f-string, ~3x cheaper than the JSON encoder
            q = _quote
            line = (
                f'{{"request_id":{N if request_id is None else q(request_id)},"time":"{self._time(t)}",'
                f'"key_id":{N if key_id is None else q(key_id)},"tenant":{N if tenant is None else q(tenant)},'
                f'"data_class":{N if data_class is None else q(data_class)},"method":{N if method is None else q(method)},"path":{N if path is None else q(path)},'
                f'"model":{N if model is None else q(model)},'
                f'"stream":{N if stream is None else "true" if stream else "false"},"route":{N if route is None else q(route)},'
                f'"upstream":{N if upstream is None else q(upstream)},"status":{status},'
                f'"prompt_tokens":{prompt_tokens},"completion_tokens":{completion_tokens},'
                f'"latency_ms":{_value(latency_ms)},'
                f'"fallback_reason":{N if fallback_reason is None else q(fallback_reason)},"attempts":{attempts},'
                f'"failures":[{",".join(map(q, failures))}],"cache":{N if cache is None else q(cache)},'
                f'"error":{N if error is None else q(error)},'
                f'"continuation":{N if continuation is None else q(continuation)},'
                f'"cloud_refused":{N if cloud_refused is None else q(cloud_refused)},'
                f'"queued_ms":{N if queued_ms is None else _value(queued_ms)},'
                f'"queued_reason":{N if queued_reason is None else q(queued_reason)}'
            )
        else:
            parts = [key + _value(value) for key, value in zip(_KEYS, fields, strict=True)]
            if isinstance(t, float):
                parts[1] = f'{_KEYS[1]}"{self._time(t)}"'
            line = "".join(parts)
        mode = self.config.prompts
        if mode != "off":
            content = prompt_content(request_data)
            if mode == "hash":
                canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                line += f',"prompt_sha256":"{hashlib.sha256(canonical.encode()).hexdigest()}"'
            else:
                line += ',"prompt":' + _ENCODER.encode(content)
        return line + "}"

    def flush(self) -> None:
        """Write what is buffered now (used at shutdown; the background task does the same in a thread)."""
        if not self._buffer or self._stream is None:
            return
        batch, self._buffer = self._buffer, []
        self._write(batch)

    def _write(self, batch: list[tuple[Record, dict[str, Any] | None]]) -> None:
        with self._lock:
            if self._stream is None:
                return
            self._stream.write("".join(self.render(f, d) + "\n" for f, d in batch))
            self._stream.flush()
