"""The cold-start wait queue: requests that may not leave wait here while no local engine is ready.

Engines scaled to zero, starting for the first time, or all restarting at once: a request whose data class
may leave goes to the cloud at once; one that may not waits here (at most ``wait_queue.max_requests`` at a
time) until an engine turns ready, or gets a 503 with ``Retry-After`` after ``wait_queue.deadline_s``, never
a hang. The pool wakes every waiter when an engine turns ready (a probe lets its circuit through, a new
member is discovered); each then tries the local pool again. The count of waiters is the
``dsdeploy_router_waiting_requests`` gauge, which KEDA scales the engines on (from zero, too); the requests
that went to the cloud meanwhile are counted too (``dsdeploy_router_cold_cloud_requests_total``), so that
traffic that may leave can wake the engines as well (the chart's ``scaleToZero.wakeOnCloudRequests``).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from inference.router.config import WaitQueueConfig

RECHECK_S = 1.0  # a waiter looks at the pool again at least this often (a missed wake-up costs no more)

# outcomes (the dsdeploy_router_wait_queue_total metric)
SERVED = "served"  # woken, and got a local engine
DEADLINE = "deadline"  # wait_queue.deadline_s passed: 503
FULL = "full"  # refused at once: max_requests were waiting
GONE = "gone"  # the client left, or the request's own deadline came first


class WaitQueue:
    """A bounded set of waiters, each woken by ``notify()`` (every waiter; they race for the engine)."""

    def __init__(self, config: WaitQueueConfig) -> None:
        self.config = config
        self.waiting = 0
        self.outcomes: defaultdict[str, int] = defaultdict(int)
        self.cold_cloud = 0  # requests answered by the cloud because no local engine was ready
        self._waiters: set[asyncio.Future[None]] = set()

    def admit(self) -> bool:
        """Take one more waiter; False (and counted) when ``max_requests`` are waiting already."""
        if self.waiting >= self.config.max_requests:
            self.outcomes[FULL] += 1
            return False
        self.waiting += 1
        return True

    def leave(self, outcome: str) -> None:
        self.waiting -= 1
        self.outcomes[outcome] += 1

    def notify(self) -> None:
        """An engine turned ready: every waiter tries the pool again."""
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, until: float) -> None:
        """Return when notified, after ``RECHECK_S``, or at ``until`` (``time.monotonic()``), whichever is first."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait_for(fut, max(0.0, min(RECHECK_S, until - time.monotonic())))
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(fut)
