"""Cost arithmetic against worked examples written out here."""

from __future__ import annotations

import math

import pytest

from infra.decision.article_table import article_table_check
from infra.decision.cost_model import (
    SECONDS_PER_YEAR,
    LocalOption,
    Workload,
    api_cost_per_call,
    calls_per_replica_year,
    check_volumes,
    cloud_unit_cost,
    onprem_unit_cost,
)
from infra.decision.currency import DecisionInputError, ExchangeRate
from infra.decision.prices import load_api_prices


def test_article_basis_100k_calls_is_12000_cny_per_year():
    # 0.12 CNY per 1,000 tokens = 120 CNY per 1M tokens; 1,000 tokens per call:
    # per call 1,000 x 120 / 1,000,000 = 0.12 CNY; 100,000 calls -> 12,000 CNY
    _, flat = load_api_prices("article-flat").model_prices(None)
    per_call = api_cost_per_call(flat, Workload(prompt_tokens=500, completion_tokens=500), 1.0)
    assert per_call == pytest.approx(0.12)
    assert per_call * 100_000 == pytest.approx(12_000)
    assert per_call * 1_000_000 == pytest.approx(120_000)  # the article prints 98,000
    assert per_call * 10_000_000 == pytest.approx(1_200_000)  # the article prints 820,000


def test_article_table_check_states_where_the_article_differs_from_its_basis():
    check = article_table_check(
        "article-flat",
        Workload(prompt_tokens=400, completion_tokens=600),
        0.12,
        "CNY",
        lambda calls: ("base on-prem", 61_000.0),
    )
    assert check.reproduces_basis
    by_calls = {r.calls_per_year: r for r in check.rows}
    assert by_calls[100_000].difference_pct == 0.0
    # (98,000 - 120,000) / 120,000 = -18.33%; (820,000 - 1,200,000) / 1,200,000 = -31.67%
    assert by_calls[1_000_000].difference_pct == -18.3
    assert by_calls[10_000_000].difference_pct == -31.7
    assert any("98,000" in n and "120,000" in n for n in check.notes)
    assert by_calls[100_000].this_study_local_3y == pytest.approx(183_000)  # 3 x 61,000
    assert by_calls[100_000].this_study_local_option == "base on-prem"
    assert not article_table_check("deepseek", Workload(), 0.01, "CNY").reproduces_basis


def test_deepseek_price_with_cache_hits_and_currency_conversion():
    # deepseek-chat (USD per 1M, V3.2): hit 0.028, miss 0.28, output 0.42; 2,000 prompt tokens, 25% cache hits,
    # 300 completion tokens: input price 0.25 x 0.028 + 0.75 x 0.28 = 0.217 USD/M
    # per call (2,000 x 0.217 + 300 x 0.42) / 1e6 = (434 + 126) / 1e6 = 0.00056 USD
    sheet = load_api_prices("deepseek")
    name, prices = sheet.model_prices("deepseek-chat")
    assert (name, prices.currency) == ("deepseek-chat", "USD")
    w = Workload(prompt_tokens=2000, completion_tokens=300, cache_hit_ratio=0.25)
    assert api_cost_per_call(prices, w, 1.0) == pytest.approx(0.00056)
    rate = ExchangeRate(usd_cny=7.0, as_of="2026-01-01", source="test")
    # at 7 CNY per USD: 0.00392 CNY per call; 1M calls -> 3,920 CNY
    assert api_cost_per_call(prices, w, rate.convert(1.0, "USD", "CNY")) * 1e6 == pytest.approx(3920)
    assert rate.convert(70.0, "CNY", "USD") == pytest.approx(10.0)


def test_capacity_replicas_and_local_costs():
    # 1,000 decode tokens/s at 60% utilization, 500 completion tokens, peak x2:
    # 1,000 x 0.6 x 31,536,000 / (500 x 2) = 18,921,600 calls per replica-year
    w = Workload(prompt_tokens=500, completion_tokens=500, peak_to_average=2)
    cap = calls_per_replica_year(1000, w, 0.6)
    assert cap == pytest.approx(1000 * 0.6 * SECONDS_PER_YEAR / 1000) == pytest.approx(18_921_600)
    # on-prem: purchase 90,000 over 3 years = 30,000; power 1 kW x PUE 1.5 x 8,760 h x 0.8 = 10,512; hosting 2,000
    parts = onprem_unit_cost(
        purchase=90_000, amortization_years=3, power_kw=1.0, pue=1.5, electricity_per_kwh=0.8, hosting_per_year=2_000
    )
    assert parts == pytest.approx({"hardware_depreciation": 30_000, "power": 10_512, "hosting": 2_000})
    onprem = LocalOption(
        tier="base",
        kind="on-prem",
        platform="on-prem",
        calls_per_replica_year=cap,
        unit_cost_per_year=sum(parts.values()),
        fixed_cost_per_year=5_000,
    )
    assert onprem.annual_cost(0) == pytest.approx(5_000 + 42_512)  # one replica is always on
    assert onprem.replicas(cap) == 1 and onprem.replicas(cap + 1) == 2
    assert onprem.annual_cost(3 * cap) == pytest.approx(5_000 + 3 * 42_512)
    # cloud: 2 USD/h x 8,760 h = 17,520 per node-year; 2 replicas per node
    node = cloud_unit_cost(2.0)["node_hours"]
    assert node == pytest.approx(17_520)
    cloud = LocalOption(
        tier="pro",
        kind="cloud-spot",
        platform="eks",
        machine_type="x",
        replicas_per_node=2,
        calls_per_replica_year=cap,
        unit_cost_per_year=node,
    )
    assert cloud.key == "pro eks spot"
    assert [cloud.units(v) for v in (1, cap, 2 * cap, 2 * cap + 1)] == [1, 1, 1, 2]
    unpriced = LocalOption(
        tier="pro", kind="cloud-spot", platform="eks", calls_per_replica_year=cap, missing_price="no price"
    )
    assert unpriced.annual_cost(1e6) is None and not unpriced.priced


@pytest.mark.parametrize("volumes", [[-1.0], [1e5, -5.0], [math.nan], [math.inf], []])
def test_bad_volumes_are_clear_errors(volumes):
    with pytest.raises(DecisionInputError, match="--volumes"):
        check_volumes(volumes)


def test_bad_capacity_inputs():
    with pytest.raises(DecisionInputError, match="utilization"):
        calls_per_replica_year(100, Workload(), 1.5)
    with pytest.raises(DecisionInputError, match="throughput"):
        calls_per_replica_year(0, Workload(), 0.5)
    with pytest.raises(DecisionInputError, match="amortization"):
        onprem_unit_cost(purchase=1, amortization_years=0, power_kw=0, pue=1, electricity_per_kwh=0, hosting_per_year=0)
    with pytest.raises(DecisionInputError, match="currency"):
        ExchangeRate(usd_cny=7, as_of="2026-01-01", source="t").convert(1, "EUR", "CNY")


def test_deepseek_preset_matches_the_routers_default_cloud_prices():
    from inference.router.config import PRICE_CURRENCY, CloudConfig

    router = CloudConfig(api_key="${DEEPSEEK_API_KEY}").prices
    sheet = load_api_prices("deepseek").models
    for name in ("deepseek-chat", "deepseek-reasoner"):
        p = sheet[name]
        # V3.2 list prices, USD per 1M tokens, effective 2025-09-29 (not the Feb-Sep 2025 0.27/1.10 table)
        assert (p.input_cache_hit_per_mtok, p.input_cache_miss_per_mtok, p.output_per_mtok) == (0.028, 0.28, 0.42)
        assert p.effective.isoformat() == "2025-09-29" and "not read on DeepSeek's own page" in p.source
        assert (router[name].input_usd_per_mtok, router[name].output_usd_per_mtok) == (
            p.input_cache_miss_per_mtok,
            p.output_per_mtok,
        )
        assert p.currency == PRICE_CURRENCY  # the router's budgets (limits.budgets.*_usd) are in this currency
