"""One reasoning shape for clients: DeepSeek's ``reasoning_content``, whichever upstream answered.

The DeepSeek API (the cloud route) and ``dsdeploy serve`` put a reasoning model's thinking in
``message.reasoning_content`` / ``delta.reasoning_content``; vLLM's reasoning parsers put it in
``reasoning`` (the name vLLM moved to). The router renames vLLM's field in every chat answer, whole and
streamed, so a client written against the DeepSeek API reads the same field from the local engine and
from the cloud. ``reasoning`` is not kept beside it: a field that only local answers carry would break
such a client the first time the cloud answers, and keeping both would send every thinking token twice.

Only answers that carry the field are touched; the rest pass through byte for byte. Whole answers are
reshaped here (``for_clients``); streamed ones event by event by the stream relay (streaming.py), which
parses every event anyway, within its per-event size bound.
"""

from __future__ import annotations

import json
from typing import Any

from inference.router.proxy import Reply

CHAT_PATH = "/v1/chat/completions"
VLLM_FIELD = "reasoning"
DEEPSEEK_FIELD = "reasoning_content"
_MARK = b'"reasoning"'


def rename_reasoning(data: Any) -> bool:
    """Move ``reasoning`` to ``reasoning_content`` in each choice's message or delta (in place); True when
    anything moved. An existing ``reasoning_content`` wins."""
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


def reshape_json(body: bytes) -> bytes:
    """A whole chat answer in the DeepSeek shape (unchanged when it has no ``reasoning`` key)."""
    if _MARK not in body:
        return body
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    if not rename_reasoning(data):
        return body
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def for_clients(path: str, reply: Reply) -> Reply:
    """A whole reply as clients get it: a chat answer's reasoning in ``reasoning_content``."""
    if path == CHAT_PATH and reply.status == 200 and reply.body is not None:
        reply.body = reshape_json(reply.body)
    return reply
