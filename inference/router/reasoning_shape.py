"""One reasoning shape for clients: DeepSeek's ``reasoning_content``, whichever upstream answered.

The DeepSeek API (the cloud route) and ``dsdeploy serve`` put a reasoning model's thinking in
``message.reasoning_content`` / ``delta.reasoning_content``; vLLM's reasoning parsers put it in
``reasoning`` (the name vLLM moved to). The router renames vLLM's field in every chat answer, whole and
streamed, so a client written against the DeepSeek API reads the same field from the local engine and
from the cloud. ``reasoning`` is not kept beside it: a field that only local answers carry would break
such a client the first time the cloud answers, and keeping both would send every thinking token twice.

Only answers that carry the field are touched; the rest pass through byte for byte. A streamed answer
is rewritten per complete ``data:`` line; a line longer than ``MAX_LINE_BYTES`` without a newline is
passed on unchanged (the buffer never grows past that).
"""

from __future__ import annotations

import json
from typing import Any

from inference.router.proxy import BodyStream, Reply

CHAT_PATH = "/v1/chat/completions"
VLLM_FIELD = "reasoning"
DEEPSEEK_FIELD = "reasoning_content"
MAX_LINE_BYTES = 1 << 20
_MARK = b'"reasoning"'


def _rename(data: Any) -> bool:
    """Move ``reasoning`` to ``reasoning_content`` in each choice's message or delta (in place)."""
    changed = False
    choices = data.get("choices") if isinstance(data, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        for key in ("message", "delta"):
            part = choice.get(key) if isinstance(choice, dict) else None
            if isinstance(part, dict) and VLLM_FIELD in part:
                value = part.pop(VLLM_FIELD)
                if part.get(DEEPSEEK_FIELD) is None:
                    part[DEEPSEEK_FIELD] = value
                changed = True
    return changed


def _dump(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def reshape_json(body: bytes) -> bytes:
    """A whole chat answer in the DeepSeek shape (unchanged when it has no ``reasoning`` key)."""
    if _MARK not in body:
        return body
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    return _dump(data) if _rename(data) else body


def reshape_lines(block: bytes) -> bytes:
    """Complete server-sent-event lines in the DeepSeek shape; other lines are left as they are."""
    if _MARK not in block:
        return block
    lines = block.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(b"data:") and _MARK in line:
            payload = line[5:].lstrip(b" ")
            reshaped = reshape_json(payload)
            if reshaped is not payload:
                lines[i] = b"data: " + reshaped
    return b"\n".join(lines)


class ReshapedStream:
    """A reply stream whose complete lines are reshaped; a partial line waits for the rest of it."""

    __slots__ = ("_inner", "_pending")

    def __init__(self, inner: BodyStream) -> None:
        self._inner = inner
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) <= MAX_LINE_BYTES:
            self._pending = data
            return b""
        if end == 0:  # an over-long line: pass it on as it is
            self._pending = b""
            return data
        self._pending = data[end:]
        return reshape_lines(data[:end])

    async def readany(self) -> bytes:
        while True:
            chunk = await self._inner.readany()
            if not chunk:  # the upstream ended: what is left goes out as it came
                rest, self._pending = self._pending, b""
                return rest
            out = self.feed(chunk)
            if out:
                return out

    def close(self) -> None:
        self._inner.close()


def for_clients(path: str, reply: Reply) -> Reply:
    """The reply as clients get it: a chat answer's reasoning in ``reasoning_content``."""
    if path != CHAT_PATH or reply.status != 200:
        return reply
    if reply.body is not None:
        reply.body = reshape_json(reply.body)
    elif reply.stream is not None and reply.first_chunk is not None:
        stream = ReshapedStream(reply.stream)
        reply.first_chunk = stream.feed(reply.first_chunk)
        reply.stream = stream
    return reply
