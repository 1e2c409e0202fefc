"""Break-even volume: where a local option's annual cost meets the API's.

The API's annual cost is a straight line ``a x v`` (``a`` = cost per call). A local option's cost is a
staircase over replicas: with ``U`` calls one replica serves per year, volumes in ``((k-1) U, k U]`` need
``k`` replicas and cost ``F + m(k) x C`` (``F`` fixed operations cost, ``C`` one unit-year, ``m(k)`` the
units ``k`` replicas occupy; at least one replica is always on). ``m`` repeats in blocks: ``B`` replicas
fill exactly ``M`` units (a unit holding P one-node replicas: B = P, M = 1; a replica of N pods on units
of P pods: B = P / gcd(N, P), M = N / gcd(N, P)), so ``m(qB + r) = qM + m(r)``.

In step ``k`` the API is cheaper below ``c_k = (F + m(k) C) / a``, i.e. the local option is dearer on
``((k-1) U, min(k U, c_k))`` when ``c_k > (k-1) U``. With ``D = B U - M C / a`` (what a full block saves
against the API, in calls):

- ``D <= 0``: a block costs at least what its full capacity would cost on the API -> the API stays cheaper
  at every volume, there is no break-even.
- otherwise, for each offset ``r`` in ``1..B`` the last block ``q`` where step ``qB + r`` is still dearer
  somewhere is the largest ``q`` with ``(F + m(r) C) / a - (r-1) U - q D > 0``; the break-even volume is
  the largest ``min(k U, c_k)`` over those steps: from there on the local option is never dearer. The first
  crossing (the local option is not dearer for the first time, possibly only until its next step) is the
  smallest ``max((k-1) U, c_k)`` over the steps with ``c_k <= k U``.
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
        return BreakEven(
            option=key, volume=None, annual_cost=None, first_crossing=None, reason=f"not priced: {option.missing_price}"
        )
    a = api_cost_per_call
    fixed, unit, cap = option.fixed_cost_per_year, option.unit_cost_per_year, option.calls_per_unit_year
    if a <= 0:
        return BreakEven(
            option=key,
            volume=None,
            annual_cost=None,
            first_crossing=None,
            reason="the API price is zero, so the API is never dearer",
        )
    per_replica = option.calls_per_replica_year
    block_replicas, block_units = option.replica_block()
    saving = block_replicas * per_replica - block_units * unit / a
    if saving <= 0:
        return BreakEven(
            option=key,
            volume=None,
            annual_cost=None,
            first_crossing=None,
            reason=(
                f"the API stays cheaper at every volume: one {'node' if option.kind != 'on-prem' else 'server'} "
                f"costs {format_money(unit, currency)}/year but serves at most {cap:,.0f} calls/year, which cost "
                f"{format_money(a * cap, currency)}/year on the API"
            ),
        )
    volume, first = 0.0, math.inf
    for r in range(1, block_replicas + 1):
        c_r = (fixed + option.units_for(r) * unit) / a
        slack = c_r - (r - 1) * per_replica
        if slack > 0:  # the last step of this offset that is still dearer somewhere
            k = (_ceil(slack / saving) - 1) * block_replicas + r
            volume = max(volume, min(k * per_replica, (fixed + option.units_for(k) * unit) / a))
        q_first = max(0, _ceil((c_r - r * per_replica) / saving))
        k = q_first * block_replicas + r
        first = min(first, max((k - 1) * per_replica, (fixed + option.units_for(k) * unit) / a))
    first = min(first, volume)
    return BreakEven(
        option=key,
        volume=volume,
        annual_cost=a * volume,
        first_crossing=first,
        reason=(
            f"from {volume:,.0f} calls/year on, {key} is never dearer than the API "
            f"({option.units(volume * 1.0001)} {'server' if option.kind == 'on-prem' else 'node'}(s))"
        ),
    )
