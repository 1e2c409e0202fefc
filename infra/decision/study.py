"""One cost study: gathers price sheets, catalog and planner figures, and computes the comparison.

``run_study(CostRequest(...)) -> CostStudy`` is what ``dsdeploy cost`` and ``dsdeploy report`` call.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from infra.catalog import load_catalog
from infra.catalog.schema import CLOUD_PLATFORMS, CloudPlatform
from infra.decision.article_table import ArticleTableCheck, article_table_check
from infra.decision.breakeven import BreakEven, break_even
from infra.decision.capacity import TierCapacity, capacity_on, check_model, plan_context, tier_capacity
from infra.decision.cost_model import (
    LocalOption,
    Workload,
    api_cost_per_call,
    check_volumes,
)
from infra.decision.currency import Currency, DecisionInputError, ExchangeRate
from infra.decision.options import cloud_options, onprem_option
from infra.decision.prices import ARTICLE_PRESET, SourcedAmount, load_api_prices, load_local_prices
from infra.planner import DeploymentPlan, PlanDoesNotFit

ARTICLE_VOLUMES = (100_000.0, 1_000_000.0, 10_000_000.0)
DEFAULT_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"


class Amount(BaseModel):
    """An amount the user typed, with its currency."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    amount: float = Field(ge=0)
    currency: Currency


class CostRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    volumes: list[float] = Field(default_factory=lambda: list(ARTICLE_VOLUMES))  # calls per year
    workload: Workload = Field(default_factory=lambda: Workload(prompt_tokens=500, completion_tokens=500))
    api_prices: str = Field(default=ARTICLE_PRESET, min_length=1)
    api_model: str | None = Field(default=None, min_length=1)
    currency: Currency = "CNY"
    usd_cny: float | None = Field(default=None, gt=0)
    local_prices: str | None = Field(default=None, min_length=1)
    tiers: list[str] = Field(default_factory=lambda: list(load_catalog().tiers))
    platforms: list[CloudPlatform] = Field(default_factory=lambda: list(CLOUD_PLATFORMS))
    onprem: bool = True
    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    quantization: str | None = Field(default=None, min_length=1)
    context: int | None = Field(default=None, gt=0)  # default: sized for the workload's calls
    throughput_tokens_per_s: float | None = Field(default=None, gt=0)
    amortization_years: float = Field(default=3.0, gt=0)
    utilization: float = Field(default=0.6, gt=0, le=1)
    hardware_price: Amount | None = None  # one server of the tier's shape, total
    power_kw: float | None = Field(default=None, ge=0)
    electricity_per_kwh: Amount | None = None
    pue: float | None = Field(default=None, ge=1, le=3)
    hosting_per_server_year: Amount | None = None
    ops_per_year: Amount | None = None
    on_demand_hourly: Amount | None = None
    spot_hourly: Amount | None = None

    @field_validator("tiers", "platforms")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one")
        return list(dict.fromkeys(v))  # repeated names count once, order kept


class VolumeRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    calls_per_year: float
    api: float
    local: dict[str, float | None]
    # the same costs over the amortization period (for on-prem: purchase + running costs of those years)
    api_tco: float
    local_tco: dict[str, float | None]
    replicas: dict[str, int]
    cheapest: str


class CostStudy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    currency: Currency
    exchange_rate: ExchangeRate
    api_sheet: str
    api_model: str
    api_price_source: str
    api_price_read_on: dt.date
    api_cost_per_call: float
    workload: Workload
    amortization_years: float
    utilization: float
    capacities: list[TierCapacity]
    options: list[LocalOption]
    rows: list[VolumeRow]
    break_evens: list[BreakEven]
    assumptions: list[str]
    article_table: ArticleTableCheck | None  # the article's cost table against its own basis
    warnings: list[str]
    # What the report's plan section shows, kept from the study's own planning (not in --json output)
    max_model_len: int = Field(exclude=True)  # the context every tier was planned with
    plans: dict[str, DeploymentPlan] = Field(default_factory=dict, exclude=True)  # tier -> plan, where it fits
    unfit: dict[str, str] = Field(default_factory=dict, exclude=True)  # tier -> why the model does not fit

    def api_cost(self, volume: float) -> float:
        return self.api_cost_per_call * volume


def run_study(req: CostRequest) -> CostStudy:
    from infra.catalog import CatalogError, load_catalog

    volumes = check_volumes(req.volumes)
    sheet = load_api_prices(req.api_prices)
    model_name, prices = sheet.model_prices(req.api_model)
    local = load_local_prices(req.local_prices)
    rate = local.exchange_rate
    if req.usd_cny is not None:
        rate = ExchangeRate(usd_cny=req.usd_cny, as_of=dt.date.today(), source="given with --usd-cny")
    cur = req.currency

    def conv(amount: float, currency: str) -> float:
        return rate.convert(amount, currency, cur)

    per_call = api_cost_per_call(prices, req.workload, conv(1.0, prices.currency))
    if (req.on_demand_hourly or req.spot_hourly or req.hardware_price or req.power_kw is not None) and (
        len(req.tiers) != 1
    ):
        raise DecisionInputError(
            "--hardware-price, --power-kw, --on-demand-hourly and --spot-hourly apply to one "
            "tier: give exactly one --tier"
        )
    if (req.on_demand_hourly or req.spot_hourly) and len(req.platforms) != 1:
        raise DecisionInputError("--on-demand-hourly / --spot-hourly apply to one cloud: give exactly one --platform")
    if req.throughput_tokens_per_s is not None and len(req.tiers) != 1:
        raise DecisionInputError("--throughput-tokens-per-s is one replica's figure: give exactly one --tier")

    catalog = load_catalog()
    context = plan_context(req, check_model(req, catalog))
    run = local.running
    elec = req.electricity_per_kwh or run.electricity_per_kwh
    hosting = req.hosting_per_server_year or run.hosting_per_server_year
    ops = req.ops_per_year or run.ops_per_year
    pue = req.pue if req.pue is not None else run.pue
    fixed = conv(ops.amount, ops.currency)
    warnings: list[str] = []
    capacities: list[TierCapacity] = []
    plans: dict[str, DeploymentPlan] = {}
    unfit: dict[str, str] = {}
    options: list[LocalOption] = []
    for tier_name in req.tiers:
        try:
            tier = catalog.tier(tier_name)
        except CatalogError as exc:
            raise DecisionInputError(f"--tier {tier_name!r}: {exc}") from None
        try:
            cap, plan = tier_capacity(req, tier, context)
        except PlanDoesNotFit as exc:
            unfit[tier_name] = str(exc)
            warnings.append(
                f"tier {tier.key}: {req.model} does not fit at max model length {context:,}, left out: {exc}"
            )
            continue
        plans[tier_name] = plan
        mapping_for = plan.machine
        capacities.append(cap)
        if req.onprem:
            options.append(
                onprem_option(
                    req,
                    local,
                    tier_name,
                    tier.gpus_per_replica,
                    mapping_for("existing"),
                    cap,
                    conv,
                    pue,
                    elec,
                    hosting,
                    fixed,
                )
            )
        for platform in req.platforms:
            mapping = mapping_for(platform)
            on_machine = capacity_on(req, cap, plan, mapping)  # the machine's own GPU may differ from the tier's
            options.extend(cloud_options(req, local, tier_name, platform, mapping, on_machine, conv, fixed))
    if not capacities:
        raise DecisionInputError("no tier can serve the model: " + "; ".join(warnings))

    rows = []
    for v in volumes:
        costs = {o.key: o.annual_cost(v) for o in options}
        candidates = {"API": per_call * v} | {k: c for k, c in costs.items() if c is not None}
        years = req.amortization_years
        rows.append(
            VolumeRow(
                calls_per_year=v,
                api=per_call * v,
                local=costs,
                api_tco=per_call * v * years,
                local_tco={k: None if c is None else c * years for k, c in costs.items()},
                replicas={c.tier: max(1, math.ceil(v / c.calls_per_replica_year - 1e-12)) for c in capacities},
                cheapest=min(candidates, key=lambda k: candidates[k]),
            )
        )
    assumptions = [
        f"exchange rate: {rate.describe()}",
        f"API: {sheet.name} / {model_name}: {prices.input_cache_hit_per_mtok:g} (cache hit) / "
        f"{prices.input_cache_miss_per_mtok:g} (cache miss) / {prices.output_per_mtok:g} (output) "
        f"{prices.currency} per 1M tokens; source {prices.source}, read {prices.read_on}",
        f"electricity {elec.amount:g} {elec.currency}/kWh ({_origin(elec)}), PUE {pue:g}",
        f"hosting per server-year {hosting.amount:g} {hosting.currency} ({_origin(hosting)})",
        f"operations per year {ops.amount:g} {ops.currency} ({_origin(ops)})",
        "servers and cloud nodes run all year (8,760 h); at least one replica is always on",
    ]
    return CostStudy(
        currency=cur,
        exchange_rate=rate,
        api_sheet=sheet.name,
        api_model=model_name,
        api_price_source=prices.source,
        api_price_read_on=prices.read_on,
        api_cost_per_call=per_call,
        workload=req.workload,
        amortization_years=req.amortization_years,
        utilization=req.utilization,
        capacities=capacities,
        options=options,
        rows=rows,
        break_evens=[break_even(o, per_call, cur) for o in options],
        assumptions=assumptions,
        article_table=article_table_check(sheet.name, req.workload, per_call, cur, _cheapest_local(options)),
        warnings=warnings,
        max_model_len=context,
        plans=plans,
        unfit=unfit,
    )


def _cheapest_local(options: list[LocalOption]) -> Callable[[float], tuple[str, float] | None]:
    def cheapest(calls: float) -> tuple[str, float] | None:
        costs = [(o.key, c) for o in options if (c := o.annual_cost(calls)) is not None]
        return min(costs, key=lambda kc: kc[1]) if costs else None

    return cheapest


def _origin(value: Amount | SourcedAmount) -> str:
    if isinstance(value, Amount):
        return "given on the command line"
    return f"{value.basis}: {value.source}"
