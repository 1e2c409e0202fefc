"""Config of the limits that several router replicas share: cloud spend budgets and the Redis that holds them.

Budgets are in ``config.PRICE_CURRENCY`` (USD, the currency of ``cloud.prices``), per UTC day and per UTC
month; None is no budget. See docs/router.md ("Budgets and shared state").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

PERIODS: tuple[str, ...] = ("day", "month")


class BudgetLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    day_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    month_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @property
    def any(self) -> bool:
        return self.day_usd is not None or self.month_usd is not None

    def limit(self, period: str) -> float | None:
        return self.day_usd if period == "day" else self.month_usd


class BudgetsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    total: BudgetLimits = Field(default_factory=BudgetLimits)  # all keys together
    per_key: BudgetLimits = Field(default_factory=BudgetLimits)  # each key (auth.keys[].budget overrides)

    @property
    def any(self) -> bool:
        return self.total.any or self.per_key.any


def _check_redis_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        # never echo the value: it may hold a credential
        raise ValueError("must be redis://HOST:PORT/DB or rediss://HOST:PORT/DB (TLS) with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "credentials in the URL (user:password@) are not allowed: give the password as "
            "limits.redis_password: ${REDIS_PASSWORD} (from a Secret)"
        )
    if parts.query or parts.fragment:
        raise ValueError("a query string or fragment is not allowed (TLS: use rediss://)")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"the path must be a database number (e.g. /0), got /{db}")
    try:
        parts.port  # noqa: B018 (raises on a port out of range)
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    return value


RedisUrl = Annotated[str, AfterValidator(_check_redis_url)]


def _check_ca_file(value: str) -> str:
    """A PEM bundle of the CAs that sign the Redis server's certificate, mounted in the router's file system."""
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path to a PEM file of CA certificates, got {value!r}")
    if not path.is_file():
        raise ValueError(f"{value} is not a readable file (mount the CA bundle there, e.g. from a Secret)")
    return value


CaFile = Annotated[str, AfterValidator(_check_ca_file)]
