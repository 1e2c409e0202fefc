"""Counters that router replicas share: per-key rate limits and cloud spend, in Redis or in this process.

``LocalState`` (no ``limits.redis_url``) counts in this replica alone, as one router always did.
``RedisState`` keeps them in Redis (``redis.asyncio``), one server-side Lua script per operation so two
replicas never interleave a read and a write: a token bucket per key (its clock is Redis' ``TIME``, one
clock for all replicas) and spend counters in integer nano-USD. Every key gets a TTL, so nothing piles up.

When Redis does not answer (``limits.redis_timeout_s``), it is left alone for ``limits.redis_retry_s``
(requests do not each wait for it): rate limits are counted by this replica alone meanwhile (per replica,
so N replicas allow up to N times the rate), spend reads fail (the budget gate then refuses the cloud:
fail closed), and charges wait in a bounded map (``MAX_PENDING`` counters) that is added to Redis as soon
as it answers again.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from inference.router.config import LimitsConfig
from inference.router.ratelimit import RateLimiter

PREFIX = "dsdeploy_router_"
MAX_PENDING = 4096  # spend counters held while Redis is down; more are dropped (and counted)

# KEYS[1] bucket; ARGV[1] rpm. Returns the wait in seconds as a string ("0": allowed). Redis truncates Lua
# numbers to integers, hence the strings.
RATE_SCRIPT = """
local rpm = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or rpm
local ts = tonumber(b[2]) or now
tokens = math.min(rpm, tokens + math.max(0, now - ts) * rpm / 60)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) * 60 / rpm end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
redis.call('EXPIRE', KEYS[1], 61)
return string.format('%.6f', wait)
"""

# KEYS: spend counters; ARGV: amount, ttl for each key in turn. Returns the new totals.
CHARGE_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('INCRBY', key, ARGV[2 * i - 1])
  redis.call('EXPIRE', key, ARGV[2 * i])
end
return out
"""

# KEYS: spend counters; ARGV: amount, ttl, limit for each key in turn (integers). Check and charge in one
# step: if any counter has reached its limit, nothing is added and the script returns that counter's index
# (1-based); else every counter gets its amount and 0 is returned. No other replica's hold can come between.
HOLD_SCRIPT = """
for i, key in ipairs(KEYS) do
  if (tonumber(redis.call('GET', key)) or 0) >= tonumber(ARGV[3 * i]) then
    return i
  end
end
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[3 * i - 2])
  redis.call('EXPIRE', key, ARGV[3 * i - 1])
end
return 0
"""

Hold = tuple[str, int, int, int]  # (counter key, nano-USD, ttl s, limit nano-USD)


class SharedStateDown(Exception):
    """Redis did not answer: spend cannot be read (the caller fails closed)."""


class SharedState(Protocol):
    shared: bool  # counted for all replicas (Redis), or for this one

    async def rate(self, key_id: str, rpm: int) -> float | None: ...
    async def spent(self, keys: list[str]) -> list[int]: ...
    async def charge(self, amounts: list[tuple[str, int, int]]) -> None: ...
    async def hold(self, holds: list[Hold]) -> int: ...
    async def close(self) -> None: ...


class LocalState:
    """This replica's own counters (one router, or Redis not configured)."""

    shared = False

    def __init__(self, clock=time.monotonic) -> None:  # noqa: ANN001
        self.limiter = RateLimiter()
        self._clock = clock
        self._spend: dict[str, tuple[int, float]] = {}  # key -> (nano-USD, expires at); keys from config

    async def rate(self, key_id: str, rpm: int) -> float | None:
        return self.limiter.acquire(key_id, rpm)

    async def spent(self, keys: list[str]) -> list[int]:
        now = self._clock()
        out = []
        for key in keys:
            value, expires = self._spend.get(key, (0, 0.0))
            out.append(value if expires > now else 0)
        return out

    async def charge(self, amounts: list[tuple[str, int, int]]) -> None:
        now = self._clock()
        for key in [k for k, (_, expires) in self._spend.items() if expires <= now]:
            del self._spend[key]  # a past period: bounded like Redis' TTLs
        for key, amount, ttl in amounts:
            value, _ = self._spend.get(key, (0, 0.0))
            self._spend[key] = (value + amount, now + ttl)

    async def hold(self, holds: list[Hold]) -> int:
        """Charge every counter unless one has reached its limit: that one's index (1-based), else 0. No
        await between the check and the charge: atomic within this process."""
        spent = await self.spent([key for key, *_ in holds])
        for i, ((_, _, _, limit), value) in enumerate(zip(holds, spent, strict=True), 1):
            if value >= limit:
                return i
        await self.charge([(key, amount, ttl) for key, amount, ttl, _ in holds])
        return 0

    async def close(self) -> None:
        return None


class RedisState:
    """Counters in Redis, shared by every replica that names the same ``limits.redis_url``."""

    shared = True

    def __init__(self, limits: LimitsConfig, clock=time.monotonic) -> None:  # noqa: ANN001
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        assert limits.redis_url is not None
        self._errors_types: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError, TimeoutError)
        timeout = limits.redis_timeout_s
        # One bounded pool; a request waits at most redis_timeout_s for a connection, and no call is retried
        # by the client (a failure marks Redis down for redis_retry_s instead).
        tls: dict[str, object] = {}
        if limits.redis_url.startswith("rediss://"):  # the certificate and its host name are always checked
            # (said explicitly: redis-py before 6.0 did not check the host name by default)
            tls = {"ssl_cert_reqs": "required", "ssl_check_hostname": True, "ssl_ca_certs": limits.redis_tls_ca_file}
        pool = aioredis.BlockingConnectionPool.from_url(
            limits.redis_url,
            **tls,
            max_connections=limits.redis_max_connections,
            timeout=timeout,
            password=limits.redis_password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.client = aioredis.Redis(connection_pool=pool)
        self._rate = self.client.register_script(RATE_SCRIPT)
        self._charge = self.client.register_script(CHARGE_SCRIPT)
        self._hold = self.client.register_script(HOLD_SCRIPT)
        self.retry_s = limits.redis_retry_s
        self.prefix = limits.redis_key_prefix
        self._clock = clock
        self.local = LocalState(clock)  # rate limits while Redis is down
        self.down_until = 0.0
        self.up = True
        self.errors: defaultdict[str, int] = defaultdict(int)  # operation -> failed calls
        self.local_rate_decisions = 0  # rate limits decided by this replica alone while Redis was down
        self.pending: dict[str, tuple[int, int]] = {}  # key -> (nano-USD not yet in Redis, ttl)
        self.pending_dropped = 0

    def _available(self) -> bool:
        return self.up or self._clock() >= self.down_until

    def _failed(self, op: str) -> None:
        self.errors[op] += 1
        self.up = False
        self.down_until = self._clock() + self.retry_s

    async def rate(self, key_id: str, rpm: int) -> float | None:
        if self._available():
            try:
                wait = float(await self._rate(keys=[f"{self.prefix}:rate:{key_id}"], args=[rpm]))
                self.up = True
                return wait if wait > 0 else None
            except self._errors_types:
                self._failed("rate")
        self.local_rate_decisions += 1
        return self.local.limiter.acquire(key_id, rpm)

    async def _read(self, op: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """A call whose answer the caller needs (spend reads, holds): held charges are sent first; raises
        SharedStateDown when Redis does not answer (the caller fails closed)."""
        if not self._available():
            raise SharedStateDown
        try:
            if self.pending:
                await self._flush()
            answer = await call()
        except self._errors_types:
            self._failed(op)
            raise SharedStateDown from None
        self.up = True
        return answer

    async def spent(self, keys: list[str]) -> list[int]:
        values = await self._read("spent", lambda: self.client.mget(keys))
        return [int(v) if v is not None else 0 for v in values]

    async def charge(self, amounts: list[tuple[str, int, int]]) -> None:
        for key, amount, ttl in amounts:
            held, _ = self.pending.get(key, (0, 0))
            if key not in self.pending and len(self.pending) >= MAX_PENDING:
                self.pending_dropped += 1
                continue
            self.pending[key] = (held + amount, ttl)
        if self.pending and self._available():
            try:
                await self._flush()
                self.up = True
            except self._errors_types:
                self._failed("charge")

    async def hold(self, holds: list[Hold]) -> int:
        """Check and charge in one Redis script (HOLD_SCRIPT); raises SharedStateDown when Redis does not
        answer (the caller fails closed, as for ``spent``)."""
        args: list[int] = []
        for _, amount, ttl, limit in holds:
            args += [amount, ttl, limit]
        return int(await self._read("hold", lambda: self._hold(keys=[key for key, *_ in holds], args=args)))

    async def _flush(self) -> None:
        """Send what is held; taken out first, so two requests flushing at once never send it twice."""
        batch, self.pending = self.pending, {}
        args: list[int] = []
        for amount, ttl in batch.values():
            args += [amount, ttl]
        try:
            await self._charge(keys=list(batch), args=args)
        except BaseException:
            for key, (amount, ttl) in batch.items():  # held again, with what came in meanwhile
                if key not in self.pending and len(self.pending) >= MAX_PENDING:
                    self.pending_dropped += 1
                    continue
                held, _ = self.pending.get(key, (0, ttl))
                self.pending[key] = (held + amount, ttl)
            raise

    async def close(self) -> None:
        await self.client.aclose()

    def collect(self) -> Iterator[Metric]:
        """prometheus-client collector protocol (registered with the router's registry)."""
        state = self
        yield GaugeMetricFamily(
            PREFIX + "shared_state_up",
            "1 while Redis (limits.redis_url) answers; 0: budgets "
            "refuse the cloud and rate limits are counted per replica",
            value=1.0 if state.up else 0.0,
        )
        errors = CounterMetricFamily(
            PREFIX + "shared_state_errors", "Redis calls that failed, by operation", labels=["operation"]
        )
        for op, n in sorted(state.errors.items()):
            errors.add_metric([op], n)
        yield errors
        yield CounterMetricFamily(
            PREFIX + "rate_limit_local_decisions",
            "Rate-limit decisions this replica made alone while Redis was down",
            value=state.local_rate_decisions,
        )
        yield GaugeMetricFamily(
            PREFIX + "shared_state_pending_charges",
            "Spend counters waiting for Redis to answer",
            value=len(state.pending),
        )
        yield CounterMetricFamily(
            PREFIX + "shared_state_dropped_charges",
            "Spend counters dropped while Redis was down (more than shared_state.MAX_PENDING)",
            value=state.pending_dropped,
        )


def shared_state(limits: LimitsConfig) -> LocalState | RedisState:
    return RedisState(limits) if limits.redis_url is not None else LocalState()
