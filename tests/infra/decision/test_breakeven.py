"""Break-even where the curves cross, checked on both sides."""

from __future__ import annotations

import pytest

from infra.decision.breakeven import break_even
from infra.decision.cost_model import LocalOption


def _option(unit: float, cap: float, fixed: float = 0.0, per_node: int = 1) -> LocalOption:
    return LocalOption(
        tier="base",
        kind="on-prem" if per_node == 1 else "cloud-on-demand",
        platform="on-prem" if per_node == 1 else "gke",
        replicas_per_node=per_node,
        calls_per_replica_year=cap,
        unit_cost_per_year=unit,
        fixed_cost_per_year=fixed,
    )


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
    opt = LocalOption(
        tier="pro",
        kind="cloud-spot",
        platform="eks",
        calls_per_replica_year=1e6,
        missing_price="no spot price for p5.48xlarge",
    )
    be = break_even(opt, 0.12)
    assert be.volume is None and "not priced" in be.reason and "p5.48xlarge" in be.reason


def _brute_force(opt: LocalOption, a: float, steps: int = 5_000) -> tuple[float, float]:
    """(break-even, first crossing) by walking the replica steps one by one."""
    per, unit, fixed = opt.calls_per_replica_year, opt.unit_cost_per_year, opt.fixed_cost_per_year
    volume, first = 0.0, None
    for k in range(1, steps):
        c = (fixed + opt.units_for(k) * unit) / a  # the API is cheaper below c in step k
        if c > (k - 1) * per:
            volume = max(volume, min(k * per, c))
        if first is None and c <= k * per:
            first = max((k - 1) * per, c)
    return volume, min(first, volume)


@pytest.mark.parametrize(
    ("nodes", "pods", "unit", "cap", "fixed", "a"),
    [
        (1, 1, 100, 1_000, 150, 0.15),
        (1, 2, 90, 500, 0, 0.1),
        (1, 4, 70, 300, 400, 0.2),
        (3, 1, 100, 1_000, 150, 0.5),
        (3, 2, 80, 700, 500, 0.2),
        (2, 3, 60, 400, 90, 0.25),
        (4, 2, 50, 260, 0, 0.6),
    ],
)
def test_block_formula_agrees_with_walking_every_step(nodes, pods, unit, cap, fixed, a):
    packing = (
        {"replicas_per_node": pods}
        if nodes == 1
        else {"replicas_per_node": 0, "nodes_per_replica": nodes, "pods_per_node": pods}
    )
    opt = LocalOption(
        tier="pro",
        kind="cloud-on-demand",
        platform="eks",
        **packing,
        calls_per_replica_year=cap,
        unit_cost_per_year=unit,
        fixed_cost_per_year=fixed,
    )
    be = break_even(opt, a)
    volume, first = _brute_force(opt, a)
    assert be.volume == pytest.approx(volume) and be.first_crossing == pytest.approx(first)
    _sides(opt, a, be.volume)


def test_a_replica_over_three_nodes_costs_three_nodes():
    # 3-node replica, one pod per node: 1 replica = 3 nodes, 2 replicas = 6. Node 100/year, replica 1,000 calls,
    # API 0.5/call: step 1 costs 300 -> first crossing at 600 calls; block saving 1,000 - 300/0.5 = 400 > 0.
    opt = LocalOption(
        tier="pro",
        kind="cloud-spot",
        platform="gke",
        replicas_per_node=0,
        nodes_per_replica=3,
        pods_per_node=1,
        calls_per_replica_year=1_000,
        unit_cost_per_year=100,
    )
    assert [opt.units(v) for v in (1, 1_000, 1_001, 2_500)] == [3, 3, 6, 9]
    assert opt.annual_cost(1_500) == 600
    be = break_even(opt, 0.5)
    # step 2 (1,000, 2,000] costs 600: the API is cheaper below 1,200; step 3 costs 900 < 0.5 x 2,000
    assert be.volume == pytest.approx(1_200) and be.first_crossing == pytest.approx(600)
    assert "(6 node(s))" in be.reason
    # p5.48xlarge holds 2 of the 3 pods: 1 replica = 2 machines, 2 = 3, 3 = 5
    eks = opt.model_copy(update={"platform": "eks", "pods_per_node": 2})
    assert [eks.units_for(k) for k in (1, 2, 3, 4)] == [2, 3, 5, 6] and eks.replica_block() == (2, 3)


def test_a_multi_node_option_needs_its_packing():
    with pytest.raises(ValueError, match="replicas_per_node 0 and a pods_per_node"):
        LocalOption(
            tier="pro",
            kind="cloud-spot",
            platform="gke",
            replicas_per_node=1,
            nodes_per_replica=3,
            calls_per_replica_year=1_000,
        )
    with pytest.raises(ValueError, match="replicas_per_node must be >= 1"):
        LocalOption(tier="pro", kind="cloud-spot", platform="gke", replicas_per_node=0, calls_per_replica_year=1)
