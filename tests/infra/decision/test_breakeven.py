"""Break-even where the curves cross, checked on both sides."""

from __future__ import annotations

import pytest

from infra.decision.breakeven import break_even
from infra.decision.cost_model import LocalOption


def _option(unit: float, cap: float, fixed: float = 0.0, per_node: int = 1) -> LocalOption:
    return LocalOption(tier="base", kind="on-prem" if per_node == 1 else "cloud-on-demand",
                       platform="on-prem" if per_node == 1 else "gke", replicas_per_node=per_node,
                       calls_per_replica_year=cap, unit_cost_per_year=unit, fixed_cost_per_year=fixed)


def _sides(opt: LocalOption, a: float, v: float) -> None:
    below, above = v * 0.999, v * 1.001
    assert a * below < opt.annual_cost(below), "API must be cheaper just below the break-even"
    assert opt.annual_cost(above) <= a * above, "local must not be dearer just above it"
    for factor in (1.5, 2, 3.7, 10, 55):  # and stays so
        assert opt.annual_cost(v * factor) <= a * v * factor


def test_crossing_inside_the_first_step():
    # API 0.12 per call; one replica 60,000/year serving 1M calls: break-even 60,000 / 0.12 = 500,000 calls
    opt = _option(unit=60_000, cap=1_000_000)
    be = break_even(opt, 0.12)
    assert be.volume == pytest.approx(500_000)
    assert be.annual_cost == pytest.approx(60_000)
    assert be.first_crossing == pytest.approx(500_000)
    _sides(opt, 0.12, be.volume)


def test_staircase_where_the_api_wins_again_after_a_step():
    # unit 100 serving 1,000 calls; fixed 150; API 0.15/call:
    # step 1: local 250, API cheaper below 250/0.15 = 1,666.7 > 1,000 -> API cheaper over the whole step
    # step 2 (1,000, 2,000]: local 350, crossing at 350/0.15 = 2,333.3 > 2,000 -> API cheaper throughout
    # step 3 (2,000, 3,000]: local 450, equal to the API at 3,000 (first volume where local is not dearer)
    # step 4 (3,000, 4,000]: local 550, crossing 550/0.15 = 3,666.7 inside the step
    # D = 1,000 - 100/0.15 = 333.3; Q = 250/0.15 = 1,666.7; k* = ceil(Q/D) = ceil(5) = 5:
    # step 5: local 650, crossing 4,333.3 inside (4,000, 5,000]; step 6: 750/0.15 = 5,000 <= 5,000 -> none
    opt = _option(unit=100, cap=1_000, fixed=150)
    be = break_even(opt, 0.15)
    assert be.volume == pytest.approx(650 / 0.15)
    assert be.first_crossing == pytest.approx(3_000)  # equal there, dearer again just after 3,000 and 4,000
    assert opt.annual_cost(3_500) > 0.15 * 3_500 and opt.annual_cost(3_800) < 0.15 * 3_800
    assert opt.annual_cost(4_000.5) > 0.15 * 4_000.5
    _sides(opt, 0.15, be.volume)


def test_break_even_at_a_step_boundary_with_nodes():
    # node of 2 replicas (500 calls each -> 1,000 per node) costs 90; API 0.1/call, no fixed cost:
    # crossing at 900 calls inside the first node step; D = 1,000 - 900 = 100, Q = 900 -> k* = 9,
    # c_9 = 810/0.1 = 8,100 <= 9,000 -> break-even 8,100
    opt = _option(unit=90, cap=500, per_node=2)
    be = break_even(opt, 0.1)
    assert be.volume == pytest.approx(8_100)
    assert be.first_crossing == pytest.approx(900)
    _sides(opt, 0.1, be.volume)


def test_no_break_even_when_a_unit_costs_more_than_its_capacity_on_the_api():
    opt = _option(unit=200_000, cap=1_000_000)  # full replica on the API: 0.12 x 1M = 120,000 < 200,000
    be = break_even(opt, 0.12)
    assert be.volume is None and "API stays cheaper at every volume" in be.reason
    for v in (1e3, 1e6, 1e8):
        assert 0.12 * v < opt.annual_cost(v)


def test_unpriced_option_has_no_break_even():
    opt = LocalOption(tier="pro", kind="cloud-spot", platform="eks", calls_per_replica_year=1e6,
                      missing_price="no spot price for p5.48xlarge")
    be = break_even(opt, 0.12)
    assert be.volume is None and "not priced" in be.reason and "p5.48xlarge" in be.reason
