"""A time limit on receiving a request body, without a timer per request.

uvicorn has no body-read timeout: a client that sends ``Content-Length: 500`` and 7 bytes would hold a
request open for ever (slowloris). Requests register here while they read their body; the 50 ms
deadline sweep (``HealthMonitor``) cancels those past ``timeouts.body_s``, and the app turns that
cancellation into a 408.
"""

from __future__ import annotations

import asyncio

REASON = "dsdeploy: body_timeout"


class BodyDeadlines:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.reading: dict[asyncio.Task[object], float] = {}  # task -> monotonic deadline
        self.expired: set[asyncio.Task[object]] = set()

    def begin(self, now: float) -> asyncio.Task[object] | None:
        task = asyncio.current_task()
        if task is not None:
            self.reading[task] = now + self.seconds
        return task

    def end(self, task: asyncio.Task[object] | None) -> bool:
        """Stop watching ``task``; True when the sweep cancelled it for being late."""
        if task is None:
            return False
        self.reading.pop(task, None)
        if task in self.expired:
            self.expired.discard(task)
            return True
        return False

    def expire(self, now: float) -> None:
        for task, deadline in self.reading.items():
            if now >= deadline and task not in self.expired:
                self.expired.add(task)
                task.cancel(REASON)
