"""Incremental detokenization with stop strings.

Tokens arrive one at a time; ``push`` returns the text that is safe to show so far. Text that could be
the start of a stop string is held back until it is clear; a token that ends inside a multi-byte
character (decoded as U+FFFD) waits for the next one.
"""

from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, stop: list[str] | None = None) -> None:
        self._tokenizer = tokenizer
        self._stop = [s for s in (stop or []) if s]
        self._longest = max((len(s) for s in self._stop), default=0)
        self._tokens: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._text = ""  # everything decoded so far
        self._emitted = 0  # characters of _text already returned
        self.stopped = False  # a stop string was found; _text is cut before it

    @property
    def text(self) -> str:
        return self._text

    def _decode(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(tokens, skip_special_tokens=True)

    def push(self, token: int) -> str:
        """Add one generated token; return newly visible text (may be empty)."""
        if self.stopped:
            return ""
        self._tokens.append(token)
        prefix = self._decode(self._tokens[self._prefix_offset : self._read_offset])
        full = self._decode(self._tokens[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self._text += full[len(prefix) :]
            self._prefix_offset, self._read_offset = self._read_offset, len(self._tokens)
        return self._release(final=False)

    def finish(self) -> str:
        """End of generation: return whatever was held back."""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self._stop and not self.stopped:
            window_start = max(0, self._emitted - self._longest)
            hits = [pos for s in self._stop if (pos := self._text.find(s, window_start)) >= 0]
            if hits:
                self._text = self._text[: min(hits)]
                self.stopped = True
                final = True
        end = len(self._text)
        if not final and self._stop:
            end -= self._held_back()
        end = max(end, self._emitted)
        out = self._text[self._emitted : end]
        self._emitted = end
        return out

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string. Only the places
        in the tail where a stop string's first character occurs are tried (not every length)."""
        best, text = 0, self._text
        for stop in self._stop:
            width = min(len(stop) - 1, len(text))
            if width <= best:
                continue
            tail = text[len(text) - width :]
            at = tail.find(stop[0])
            while at != -1 and width - at > best:
                if stop.startswith(tail[at:]):
                    best = width - at
                    break
                at = tail.find(stop[0], at + 1)
        return best
