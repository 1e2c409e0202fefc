"""Currencies: every price carries one, and amounts are converted only through an explicit rate.

The article and DeepSeek's Chinese price list are in CNY; cloud list prices are in USD.
Nothing is added up until :meth:`ExchangeRate.convert` has brought it into the report currency,
and the rate used (with its date and source) is printed with every result.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Currency = Literal["CNY", "USD"]
CURRENCIES: tuple[str, ...] = ("CNY", "USD")
SYMBOLS: dict[str, str] = {"CNY": "¥", "USD": "$"}


class DecisionInputError(ValueError):
    """A bad input to the cost model or the report (the message names field, value and what is allowed)."""


class ExchangeRate(BaseModel):
    """CNY per USD, with where and when it was read."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    usd_cny: float = Field(gt=0, description="CNY per 1 USD")
    as_of: dt.date
    source: str = Field(min_length=1)

    def convert(self, amount: float, from_currency: str, to_currency: str) -> float:
        for name, cur in (("from", from_currency), ("to", to_currency)):
            if cur not in CURRENCIES:
                raise DecisionInputError(
                    f"currency ({name}) {cur!r} is not supported; allowed: {', '.join(CURRENCIES)}"
                )
        if from_currency == to_currency:
            return amount
        if from_currency == "USD":
            return amount * self.usd_cny
        return amount / self.usd_cny

    def describe(self) -> str:
        return f"1 USD = {self.usd_cny:g} CNY (as of {self.as_of.isoformat()}; {self.source})"


def format_money(amount: float | None, currency: str) -> str:
    """``¥12,000`` / ``$1,234``; amounts of 100 or more are rounded to whole units."""
    if amount is None:
        return "n/a"
    symbol = SYMBOLS.get(currency, currency + " ")
    if abs(amount) >= 100:
        return f"{symbol}{amount:,.0f}"
    return f"{symbol}{amount:,.2f}"


def format_volume(calls: float | None) -> str:
    """Calls per year in a compact form: 100k, 1M, 2.5M, 10M."""
    if calls is None:
        return "n/a"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(calls) >= div:
            return f"{calls / div:.3g}{suffix}"
    return f"{calls:,.0f}"
