"""Split R1-style output into ``reasoning_content`` (inside <think>...</think>) and ``content``.

DeepSeek-R1 and its distills write their thinking between ``<think>`` and ``</think>``; newer chat
templates already end the prompt with ``<think>``, so the output starts inside the thinking and only
the closing tag appears. ``ThinkSplitter`` works on streamed text: tags split across chunks are held
back until they are complete, and leading whitespace of each part is dropped, as the DeepSeek API does.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def prompt_opens_thinking(prompt_text: str) -> bool:
    """True when the rendered prompt already ends inside a <think> block."""
    tail = prompt_text.rstrip()
    return tail.endswith(OPEN)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkSplitter:
    def __init__(self, starts_in_thinking: bool = False) -> None:
        self._state = "thinking" if starts_in_thinking else "start"
        self._buffer = ""
        self._reasoning_started = False
        self._content_started = False

    def _out(self, reasoning: str, content: str) -> tuple[str, str]:
        if reasoning and not self._reasoning_started:
            reasoning = reasoning.lstrip()
            self._reasoning_started = bool(reasoning)
        if content and not self._content_started:
            content = content.lstrip()
            self._content_started = bool(content)
        return reasoning, content

    def push(self, text: str) -> tuple[str, str]:
        """Add streamed text; return (reasoning delta, content delta)."""
        self._buffer += text
        reasoning, content = "", ""
        if self._state == "start":
            head = self._buffer.lstrip()
            if head.startswith(OPEN):
                self._state, self._buffer = "thinking", head[len(OPEN) :]
            elif OPEN.startswith(head):
                return "", ""  # could still become <think>
            else:
                self._state = "content"
        if self._state == "thinking":
            end = self._buffer.find(CLOSE)
            if end >= 0:
                reasoning, rest = self._buffer[:end], self._buffer[end + len(CLOSE) :]
                self._state, self._buffer = "content", rest
            else:
                keep = _partial_suffix(self._buffer, CLOSE)
                cut = len(self._buffer) - keep
                reasoning, self._buffer = self._buffer[:cut], self._buffer[cut:]
        if self._state == "content":
            content, self._buffer = self._buffer, ""
        return self._out(reasoning, content)

    def finish(self) -> tuple[str, str]:
        """End of output: flush what was held back."""
        rest, self._buffer = self._buffer, ""
        if self._state == "thinking":
            return self._out(rest, "")
        return self._out("", rest)


def split_reasoning(text: str, starts_in_thinking: bool = False) -> tuple[str | None, str]:
    """Whole-text form: (reasoning or None when there was none, content)."""
    splitter = ThinkSplitter(starts_in_thinking)
    r1, c1 = splitter.push(text)
    r2, c2 = splitter.finish()
    reasoning = r1 + r2
    return (reasoning or None), c1 + c2
