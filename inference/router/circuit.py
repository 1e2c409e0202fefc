"""Per-upstream circuit breaker: closed -> open (after failures) -> half-open (after a probe) -> closed."""

from __future__ import annotations

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive failures open the circuit; after ``open_s`` a successful health probe half-opens it.

    Half-open lets traffic through again: the next request success closes it, the next failure
    opens it again at once.
    """

    __slots__ = ("failures_to_open", "open_s", "state", "failures", "opened_at")

    def __init__(self, failures_to_open: int, open_s: float) -> None:
        self.failures_to_open = failures_to_open
        self.open_s = open_s
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0

    @property
    def allows_requests(self) -> bool:
        return self.state != OPEN

    def record_success(self) -> None:
        self.failures = 0
        if self.state == HALF_OPEN:
            self.state = CLOSED

    def record_failure(self, now: float, *, immediate: bool = False) -> bool:
        """Count a failure; return True when this failure opened the circuit."""
        self.failures += 1
        if self.state == OPEN:
            return False
        if immediate or self.state == HALF_OPEN or self.failures >= self.failures_to_open:
            self.state = OPEN
            self.opened_at = now
            return True
        return False

    def probe_succeeded(self, now: float) -> bool:
        """A health probe answered; return True when that moved an open circuit to half-open."""
        if self.state == OPEN and now - self.opened_at >= self.open_s:
            self.state = HALF_OPEN
            self.failures = 0
            return True
        return False
