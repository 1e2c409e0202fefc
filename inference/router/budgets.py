"""Cloud spend budgets per key and in total, per UTC day and month (``limits.budgets``, in USD).

Before a request may leave, ``BudgetGate.check`` reads what its key and all keys have spent this day and
month (one atomic read); a spent budget keeps the request home: served by a local engine if one can take
it (saturated or not), else 429 with ``Retry-After`` = seconds until the period resets. After a cloud
answer, ``charge`` adds its cost (tokens from the answer's ``usage`` at ``cloud.prices``) to every counter.
As a request leaves for the cloud, ``hold`` checks the budgets again and charges its estimated cost in
one atomic step (one Redis script, ``shared_state.HOLD_SCRIPT``): its prompt estimated from the body's
size, its completion at most the ``max_completion_tokens``/``max_tokens`` it asks for, else what the cloud
model answers at most without one (``cloud.default_max_tokens``, ``BudgetGate.default_max_tokens``). So
requests that passed ``check`` together cannot all leave: once the holds reach a limit the rest are
refused there (and stay home as at ``check``), in every replica. ``charge`` then settles the difference to
the cost its answer's ``usage`` shows (a refund when it cost less or the cloud never answered). What can
still overshoot a budget: the last hold admitted below the limit (by at most its own estimate), prompts
longer than their estimate, and answers of a cloud model missing from ``cloud.default_max_tokens`` that set
no ``max_tokens``. If the spend cannot be read or held (Redis down), the cloud is refused: no spend that
cannot be counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from inference.router.config import PRICE_CURRENCY, RouterConfig
from inference.router.errors import RouterError
from inference.router.limits_config import PERIODS, BudgetLimits
from inference.router.shared_state import LocalState, RedisState, SharedStateDown

NANO = 1_000_000_000  # counters hold integer nano-USD: exact sums in Redis' INCRBY
TTL_SLACK_S = 86_400  # a counter outlives its period by a day (replicas' clocks may differ a little)
EXHAUSTED, UNAVAILABLE = "budget_exhausted", "budget_unavailable"
P = "dsdeploy_router_"


def period_id(period: str, now: datetime) -> str:
    return now.strftime("%Y%m%d") if period == "day" else now.strftime("%Y%m")


def seconds_to_reset(period: str, now: datetime) -> float:
    """Seconds from ``now`` (UTC) until the period (UTC day, UTC month) starts anew."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        nxt = day + timedelta(days=1)
    else:
        first = day.replace(day=1)
        nxt = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    return (nxt - now).total_seconds()


class BudgetGate:
    def __init__(
        self, config: RouterConfig, state: LocalState | RedisState, clock: Callable[[], float] = time.time
    ) -> None:
        self.budgets = config.limits.budgets
        self.prices = config.cloud.prices if config.cloud is not None else {}
        # what each cloud model answers at most without max_tokens: the completion a request without one holds
        self.default_max_tokens = config.cloud.default_max_tokens if config.cloud is not None else {}
        self.key_budgets: dict[str, BudgetLimits] = {k.id: k.budget for k in config.auth.keys if k.budget is not None}
        self.state = state
        self.prefix = config.limits.redis_key_prefix
        self._clock = clock
        self.refused: dict[tuple[str, str, str], int] = {}  # (reason, scope, period) -> count
        self.seen: dict[tuple[str, str], tuple[float, float]] = {}  # (scope, period) -> (spent, limit) USD

    def _scopes(self, key_id: str) -> list[tuple[str, BudgetLimits]]:
        scopes = []
        if self.budgets.total.any:
            scopes.append(("total", self.budgets.total))
        own = self.key_budgets.get(key_id, self.budgets.per_key)
        if own.any:
            scopes.append((f"key:{key_id}", own))
        return scopes

    def _counters(self, key_id: str, now: datetime) -> list[tuple[str, str, str, float]]:
        """(redis key, scope, period, limit USD) of every budget that applies to the key."""
        out = []
        for scope, limits in self._scopes(key_id):
            for period in PERIODS:
                limit = limits.limit(period)
                if limit is not None:
                    out.append(
                        (f"{self.prefix}:budget:{scope}:{period}:{period_id(period, now)}", scope, period, limit)
                    )
        return out

    def _count(self, reason: str, scope: str, period: str) -> None:
        key = (reason, scope, period)
        self.refused[key] = self.refused.get(key, 0) + 1

    async def check(self, key_id: str) -> RouterError | None:
        """None if the request may spend, else the refusal it gets when no local engine serves it."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        counters = self._counters(key_id, now)
        if not counters:
            return None
        try:
            values = await self.state.spent([c[0] for c in counters])
        except SharedStateDown:
            return self._unavailable()
        spent_out: list[tuple[str, str, float]] = []
        for (_, scope, period, limit), value in zip(counters, values, strict=True):
            spent = value / NANO
            self.seen[(scope, period)] = (spent, limit)
            if spent >= limit:
                spent_out.append((scope, period, limit))
        return self._exhausted(spent_out, now) if spent_out else None

    def _unavailable(self) -> RouterError:
        self._count(UNAVAILABLE, "*", "*")
        return RouterError(
            503,
            "The cloud budget cannot be counted (the shared state store, limits.redis_url, "
            "does not answer), so no request leaves for the cloud, and no local engine could "
            "serve this one.",
            code=UNAVAILABLE,
            retry_after=getattr(self.state, "retry_s", 1.0),
        )

    def _exhausted(self, spent_out: list[tuple[str, str, float]], now: datetime) -> RouterError:
        for scope, period, _ in spent_out:
            self._count(EXHAUSTED, scope, period)
        wait = max(seconds_to_reset(period, now) for _, period, _ in spent_out)
        which = ", ".join(f"{scope} per {period} ({limit:g} {PRICE_CURRENCY})" for scope, period, limit in spent_out)
        return RouterError(
            429,
            f"The cloud budget is spent ({which}) and no local engine could serve this "
            f"request; it resets in {math.ceil(wait)} s.",
            code=EXHAUSTED,
            retry_after=float(math.ceil(wait)),
        )

    def _nano(self, cloud_model: str | None, prompt_tokens: int, completion_tokens: int) -> int:
        price = self.prices.get(cloud_model) if cloud_model is not None else None
        if price is None or not (prompt_tokens or completion_tokens):
            return 0
        return math.ceil(price.cost_usd(prompt_tokens, completion_tokens) * NANO)

    async def hold(
        self, key_id: str, cloud_model: str, prompt_tokens: int, completion_tokens: int
    ) -> tuple[int, RouterError | None]:
        """As a request leaves: check its budgets and charge its estimated cost in one atomic step (one
        Redis script; no other request's hold, in any replica, comes between). (nano-USD held, for
        ``charge`` to settle; None) when it may leave, else (0, the refusal: a budget another request
        spent since ``check``, or the spend cannot be counted)."""
        nano = self._nano(cloud_model, prompt_tokens, completion_tokens)
        now = datetime.fromtimestamp(self._clock(), UTC)
        counters = self._counters(key_id, now)
        if not nano or not counters:
            return 0, None
        holds = [(key, nano, self._ttl(period, now), math.ceil(limit * NANO)) for key, _, period, limit in counters]
        try:
            over = await self.state.hold(holds)
        except SharedStateDown:
            return 0, self._unavailable()
        if over:
            _, scope, period, limit = counters[over - 1]
            seen, _ = self.seen.get((scope, period), (limit, limit))
            self.seen[(scope, period)] = (max(seen, limit), limit)  # it has reached its limit at least
            return 0, self._exhausted([(scope, period, limit)], now)
        self._saw(counters, nano)
        return nano, None

    async def charge(
        self, key_id: str, cloud_model: str | None, prompt_tokens: int, completion_tokens: int, held: int = 0
    ) -> None:
        """Add one cloud answer's cost to the budgets of its key and the total, less what ``hold`` charged
        for it (a refund when it cost less, or nothing came: ``cloud_model`` None)."""
        nano = self._nano(cloud_model, prompt_tokens, completion_tokens) - held
        if nano:
            await self._add(key_id, nano)

    async def _add(self, key_id: str, nano: int) -> None:
        now = datetime.fromtimestamp(self._clock(), UTC)
        counters = self._counters(key_id, now)
        self._saw(counters, nano)
        if counters:
            await self.state.charge([(key, nano, self._ttl(period, now)) for key, _, period, _ in counters])

    @staticmethod
    def _ttl(period: str, now: datetime) -> int:
        return math.ceil(seconds_to_reset(period, now)) + TTL_SLACK_S

    def _saw(self, counters: list[tuple[str, str, str, float]], nano: int) -> None:
        """This replica's view of the counters (the spent/remaining gauges) after adding ``nano``."""
        for _, scope, period, limit in counters:
            spent, _ = self.seen.get((scope, period), (0.0, limit))
            self.seen[(scope, period)] = (spent + nano / NANO, limit)

    # prometheus-client collector protocol (registered with the router's registry)
    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            P + "budget_refused",
            "Requests kept from the cloud by a budget: spent "
            "(budget_exhausted) or not countable (budget_unavailable); each was served "
            "locally or answered 429/503",
            labels=["reason", "scope", "period"],
        )
        for (reason, scope, period), n in sorted(self.refused.items()):
            refused.add_metric([reason, scope, period], n)
        yield refused
        spent = GaugeMetricFamily(
            P + "budget_spent_usd", "Cloud spend this period as last read by this replica", labels=["scope", "period"]
        )
        remaining = GaugeMetricFamily(
            P + "budget_remaining_usd",
            "Budget left this period as last read by this replica (0 or less: requests no longer leave)",
            labels=["scope", "period"],
        )
        for (scope, period), (value, limit) in sorted(self.seen.items()):
            spent.add_metric([scope, period], value)
            remaining.add_metric([scope, period], limit - value)
        yield spent
        yield remaining
