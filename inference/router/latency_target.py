"""Overflow by latency target: each local engine's estimated time to first token (TTFT), with hysteresis.

The estimate for a request sent now is ``prefill_s + ahead / start_rate``:

- ``start_rate``: requests per second the engine takes out of its queue, the recent rate of the count of its
  TTFT histogram (``vllm:time_to_first_token_seconds_count``: one per request that got its first token);
- ``prefill_s``: the recent mean of a request's TTFT less its time queued
  (``vllm:time_to_first_token_seconds_sum`` less ``vllm:request_queue_time_seconds_sum``, per request);
- ``ahead``: the requests queued in front of it: ``vllm:num_requests_waiting`` at the last poll, plus the
  requests the router sent it since then (its own in-flight count now less at the poll), when the engine was
  queueing at the poll (when it was not, new requests start at once).

The names are vLLM V1's, read once per poll by ``engine_metrics.engine_sums``. Rates are
smoothed over polls (half the weight on the newest) and kept while the engine is idle. An engine that has
not started a request yet has no estimate, so only the fixed thresholds (``saturation``) apply to it.

Hysteresis: an engine is over the target once its estimate is above ``slo.ttft_s``, and back under it only
once the estimate is below ``slo.leave_ratio`` x ``slo.ttft_s``, so spill-over does not flap request by
request, and the engine keeps a queue (it stays busy) while the cloud takes the excess.
"""

from __future__ import annotations

import math

from inference.router.engine_metrics import QUEUE_SUM, RUNNING, TTFT_COUNT, TTFT_SUM, WAITING

NEW_WEIGHT = 0.5  # smoothing of the rates: the newest interval's share


class TtftEstimator:
    """One engine's TTFT estimate, fed by its metrics polls and read on every routing choice."""

    __slots__ = ("start_rate", "prefill_s", "waiting", "in_flight_at_poll", "over", "_last")

    def __init__(self) -> None:
        self.start_rate: float | None = None  # requests per second taken from the queue
        self.prefill_s = 0.0
        self.waiting = 0.0
        self.in_flight_at_poll = 0
        self.over = False  # over the target (hysteresis state)
        self._last: tuple[float, float, float, float, bool] | None = None  # time, count, ttft sum, queue sum, busy

    def observe(self, sums: dict[str, float], now: float, in_flight: int) -> None:
        """Take one metrics poll (``engine_metrics.engine_sums`` of it; ``now``: time.monotonic();
        ``in_flight``: the router's count then)."""
        self.waiting = sums.get(WAITING, 0.0)
        self.in_flight_at_poll = in_flight
        count = sums.get(TTFT_COUNT)
        if count is None:
            return
        ttft, queued = sums.get(TTFT_SUM, 0.0), sums.get(QUEUE_SUM, 0.0)
        busy = self.waiting > 0 or sums.get(RUNNING, 0.0) > 0
        last = self._last
        self._last = (now, count, ttft, queued, busy)
        if last is None or now <= last[0] or count < last[1]:
            return  # first poll, or the engine restarted (its counters began again)
        started = count - last[1]
        if started > 0:
            prefill = max(0.0, ((ttft - last[2]) - (queued - last[3])) / started)
            self.prefill_s = (
                prefill if self.start_rate is None else (NEW_WEIGHT * prefill + (1 - NEW_WEIGHT) * self.prefill_s)
            )
        if started > 0 or last[4] or busy:  # an idle interval says nothing about its speed
            rate = started / (now - last[0])
            self.start_rate = (
                rate if self.start_rate is None else (NEW_WEIGHT * rate + (1 - NEW_WEIGHT) * self.start_rate)
            )

    def estimate(self, in_flight: int) -> float | None:
        """Seconds to the first token of a request sent now; None until the engine has shown its speed."""
        rate = self.start_rate
        if rate is None:
            return None
        ahead = 0.0
        if self.waiting > 0:
            ahead = max(0.0, self.waiting + in_flight - self.in_flight_at_poll)
        if ahead == 0:
            return self.prefill_s
        return math.inf if rate <= 0 else self.prefill_s + ahead / rate

    def over_target(self, target: float, leave: float, in_flight: int) -> bool:
        """Whether the engine is over ``target`` now (entered above it, left below ``leave``)."""
        est = self.estimate(in_flight)
        if est is None:
            self.over = False
        elif self.over:
            self.over = est >= leave
        else:
            self.over = est > target
        return self.over
