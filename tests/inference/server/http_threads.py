"""HTTP requests run in threads, for tests that act on a server while requests are open."""

from __future__ import annotations

import json
import threading

import httpx


class Stream(threading.Thread):
    """A streaming request read in a thread: ``events`` are the parsed ``data:`` payloads (and "[DONE]");
    ``first_token`` is set at the second event (a chat stream's first carries only the role)."""

    def __init__(self, url: str, body: dict, path: str = "/v1/chat/completions") -> None:
        super().__init__(daemon=True)
        self.url, self.body, self.path = url, {**body, "stream": True}, path
        self.events: list = []
        self.first_token = threading.Event()

    def run(self) -> None:
        with httpx.stream("POST", self.url + self.path, json=self.body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    self.events.append("[DONE]" if line == "data: [DONE]" else json.loads(line[6:]))
                    if len(self.events) >= 2:
                        self.first_token.set()


class Post(threading.Thread):
    def __init__(self, url: str, body: dict, path: str = "/v1/chat/completions") -> None:
        super().__init__(daemon=True)
        self.url, self.body, self.path = url, body, path
        self.response: httpx.Response | None = None

    def run(self) -> None:
        self.response = httpx.post(self.url + self.path, json=self.body, timeout=60)
