"""Continuing a chat stream from the cloud where a local engine left off.

A stream that breaks after its first byte reached the client cannot be re-sent elsewhere. For data that
may leave, the router asks the DeepSeek API to go on from the text the client already has, with its chat
prefix completion (https://api-docs.deepseek.com/guides/chat_prefix_completion): the messages, then
``{"role": "assistant", "content": <text so far>, "prefix": true}``, POSTed to ``/beta/chat/completions``.
The cloud's events are then rewritten to read as the rest of the local stream: the local completion id,
no second ``role``, no reasoning (the answer is past it, or the cloud would reason afresh), and one final
usage covering both parts. Each event keeps the ``model`` of the backend that wrote it.
"""

from __future__ import annotations

import json
from typing import Any


class ChatStream:
    """What a chat-completion stream has said so far (per the OpenAI chunk format)."""

    __slots__ = (
        "id",
        "model",
        "_text",
        "text_bytes",
        "tokens",
        "finished",
        "choices",
        "tool_calls",
        "usage",
        "done",
        "max_text_bytes",
    )

    def __init__(self, max_text_bytes: int) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self._text: list[str] = []
        self.text_bytes = 0
        self.tokens = 0  # events that carried text: one token each from vLLM and our server
        self.finished: dict[int, str] = {}  # choice index -> finish_reason
        self.choices: set[int] = set()
        self.tool_calls = False
        self.usage: dict[str, Any] | None = None
        self.done = False  # data: [DONE] seen
        self.max_text_bytes = max_text_bytes

    def update(self, event: dict[str, Any]) -> None:
        if self.id is None:
            cid = event.get("id")
            self.id = cid if isinstance(cid, str) else None
            model = event.get("model")
            self.model = model if isinstance(model, str) else None
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = event.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            index = index if type(index) is int else 0
            self.choices.add(index)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(content, str) and content:
                    self.tokens += 1
                    if self.text_bytes <= self.max_text_bytes:
                        self._text.append(content)
                        self.text_bytes += len(content)
                elif isinstance(reasoning, str) and reasoning:
                    self.tokens += 1
                if delta.get("tool_calls") or delta.get("function_call"):
                    self.tool_calls = True
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finished[index] = reason

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def complete(self) -> bool:
        """Every choice said why it finished (a stream that then ends without ``[DONE]`` is still whole)."""
        return self.done or (bool(self.choices) and all(i in self.finished for i in self.choices))

    @property
    def continuable(self) -> bool:
        """One unfinished choice of plain text (tool calls and several choices cannot be continued by prefix)."""
        return (
            self.choices <= {0} and not self.finished and not self.tool_calls and self.text_bytes <= self.max_text_bytes
        )


def prefix_completion_body(data: dict[str, Any], cloud_model: str, so_far: ChatStream) -> bytes:
    """The cloud request that continues ``so_far``: the assistant's text as a prefix (or, when nothing was
    said yet, the plain request), streamed, with usage."""
    messages = list(data.get("messages") or [])
    text = so_far.text
    if text:
        messages.append({"role": "assistant", "content": text, "prefix": True})
    body = {
        **data,
        "model": cloud_model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for key in ("max_tokens", "max_completion_tokens"):
        if type(body.get(key)) is int:
            body[key] = max(1, body[key] - so_far.tokens)
    body.pop("n", None)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class ContinuedEvents:
    """Rewrites the cloud's events of a continuation into the rest of the local stream."""

    __slots__ = ("local", "client_wants_usage", "usage")

    def __init__(self, local: ChatStream, client_wants_usage: bool) -> None:
        self.local = local
        self.client_wants_usage = client_wants_usage
        self.usage: dict[str, Any] | None = None  # the one usage the client is told: both parts

    def rewrite(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The event as the client gets it; None to leave it out."""
        if self.local.id is not None:
            event["id"] = self.local.id
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.usage = merged_usage(self.local, usage)
            event["usage"] = self.usage
        choices = event.get("choices")
        if isinstance(choices, list):
            kept = []
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    for key in ("role", "reasoning_content", "reasoning"):
                        delta.pop(key, None)
                    if not delta and not choice.get("finish_reason"):
                        continue  # nothing left to say in this choice
                kept.append(choice)
            if not kept and choices:
                return None
            event["choices"] = kept
            if not kept and isinstance(usage, dict) and not self.client_wants_usage:
                return None  # the usage-only event the router asked for on its own
        return event


def merged_usage(local: ChatStream, cloud: dict[str, Any]) -> dict[str, Any]:
    """One usage for a continued answer: the cloud's prompt (it read the prefix too), both parts' output."""
    prompt = cloud.get("prompt_tokens")
    prompt = prompt if type(prompt) is int and prompt >= 0 else 0
    completion = cloud.get("completion_tokens")
    completion = (completion if type(completion) is int and completion >= 0 else 0) + local.tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
