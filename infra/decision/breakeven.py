"""Break-even volume: where a local option's annual cost meets the API's.

The API's annual cost is a straight line ``a x v`` (``a`` = cost per call). A local option's cost is a
staircase: ``F + k x C`` for volumes in ``((k-1) U, k U]`` (``F`` fixed operations cost, ``C`` cost of one
unit-year, ``U`` calls one unit serves per year; at least one unit is always on).

Within step ``k`` the API is cheaper below ``c_k = (F + k C) / a``. With ``D = U - C / a`` (what a full unit
saves against the API, in calls) and ``Q = (F + C) / a``:

- ``D <= 0``: a unit costs at least what its full capacity would cost on the API -> the API stays cheaper
  at every volume, there is no break-even.
- otherwise the last step where the API is cheaper anywhere is ``k* = ceil(Q / D)``, and the break-even
  volume is ``min(k* U, c_k*)``: from there on the local option is never dearer. The first crossing
  (the local option is cheaper for the first time, possibly only until its next step) is at step
  ``max(1, ceil(F / (a D)))``.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from infra.decision.cost_model import LocalOption
from infra.decision.currency import format_money


class BreakEven(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    option: str
    volume: float | None  # calls/year from which the local option is never dearer than the API
    annual_cost: float | None  # the API's (= local option's, at a crossing) annual cost there
    first_crossing: float | None  # first volume where the local option is not dearer
    reason: str


def _ceil(x: float) -> int:
    # guard against 2.0000000000000004 -> 3
    return math.ceil(x - 1e-9)


def break_even(option: LocalOption, api_cost_per_call: float, currency: str = "CNY") -> BreakEven:
    key = option.key
    if option.unit_cost_per_year is None:
        return BreakEven(option=key, volume=None, annual_cost=None, first_crossing=None,
                         reason=f"not priced: {option.missing_price}")
    a = api_cost_per_call
    fixed, unit, cap = option.fixed_cost_per_year, option.unit_cost_per_year, option.calls_per_unit_year
    if a <= 0:
        return BreakEven(option=key, volume=None, annual_cost=None, first_crossing=None,
                         reason="the API price is zero, so the API is never dearer")
    saving = cap - unit / a
    if saving <= 0:
        return BreakEven(
            option=key, volume=None, annual_cost=None, first_crossing=None,
            reason=(
                f"the API stays cheaper at every volume: one {'node' if option.kind != 'on-prem' else 'server'} "
                f"costs {format_money(unit, currency)}/year but serves at most {cap:,.0f} calls/year, which cost "
                f"{format_money(a * cap, currency)}/year on the API"
            ),
        )
    k_last = max(1, _ceil((fixed + unit) / a / saving))
    c_last = (fixed + k_last * unit) / a
    volume = min(k_last * cap, c_last)
    k_first = max(1, _ceil(fixed / (a * saving)))
    first = max((k_first - 1) * cap, (fixed + k_first * unit) / a)
    first = min(first, volume)
    return BreakEven(
        option=key, volume=volume, annual_cost=a * volume, first_crossing=first,
        reason=(
            f"from {volume:,.0f} calls/year on, {key} is never dearer than the API "
            f"({option.units(volume * 1.0001)} {'server' if option.kind == 'on-prem' else 'node'}(s))"
        ),
    )
