"""The cost arithmetic: API cost per year against the annual cost of serving the same calls locally.

All money here is already in the report currency (see :mod:`infra.decision.currency`).

API cost per call = (prompt tokens x (hit ratio x cache-hit price + (1 - hit ratio) x cache-miss price)
                     + completion tokens x output price) / 1,000,000
Local capacity: one replica decodes ``tokens_per_s`` (planner bound or measured) and, with the
planner's bounds, prefills ``prefill_tokens_per_s``; at the target utilization and the peak-to-average
ratio it serves
    seconds per call       = completion tokens / tokens_per_s + prompt tokens / prefill_tokens_per_s
    calls per replica-year = utilization x 31,536,000 s / (seconds per call x peak-to-average)
Replicas at a volume = max(1, ceil(volume / calls per replica-year)); units = ceil(replicas x nodes per
replica / pods per unit) (a replica that spans N nodes is N engine pods; a one-node replica is one pod, and
a unit holds ``replicas_per_node`` of them). Annual local cost = fixed (operations) + units x cost per unit-year, where the unit is a bought
server of the tier's shape (purchase / amortization years + power + hosting) or a cloud node (hourly price
x 8,760 h, always on); a unit runs several replicas when the plan needs fewer GPUs than the unit has.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from infra.decision.currency import DecisionInputError
from infra.decision.prices import TokenPrices

SECONDS_PER_YEAR = 365 * 24 * 3600  # 31,536,000
HOURS_PER_YEAR = 365 * 24  # 8,760
MAX_TOKENS_PER_CALL = 10_000_000  # above every model's context; larger values are typing errors
OptionKind = Literal["on-prem", "cloud-on-demand", "cloud-spot"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Workload(_Frozen):
    """What one call looks like, and how bursty the traffic is."""

    prompt_tokens: float = Field(default=500, gt=0, le=MAX_TOKENS_PER_CALL)
    completion_tokens: float = Field(default=500, gt=0, le=MAX_TOKENS_PER_CALL)
    cache_hit_ratio: float = Field(default=0.0, ge=0, le=1)
    peak_to_average: float = Field(default=2.0, ge=1, le=1000)

    @property
    def tokens_per_call(self) -> float:
        return self.prompt_tokens + self.completion_tokens


def api_cost_per_call(prices: TokenPrices, workload: Workload, to_report: float) -> float:
    """Cost of one call in the report currency; ``to_report`` converts the sheet's currency (1.0 if same)."""
    hit = workload.cache_hit_ratio
    input_price = hit * prices.input_cache_hit_per_mtok + (1 - hit) * prices.input_cache_miss_per_mtok
    per_call = (workload.prompt_tokens * input_price + workload.completion_tokens * prices.output_per_mtok) / 1e6
    return per_call * to_report


def calls_per_replica_year(
    tokens_per_s: float, workload: Workload, utilization: float, prefill_tokens_per_s: float | None = None
) -> float:
    """Calls one replica can serve in a year without exceeding ``utilization`` at the peak.

    One call holds the replica for completion / tokens_per_s seconds of decode, plus prompt /
    prefill_tokens_per_s seconds of prefill when a prefill rate is given (the planner's bounds; a
    measured output rate already includes the time spent on prompts)."""
    if not (math.isfinite(tokens_per_s) and tokens_per_s > 0):
        raise DecisionInputError(f"replica throughput must be a finite number > 0 tokens/s, got {tokens_per_s!r}")
    if not 0 < utilization <= 1:
        raise DecisionInputError(f"--utilization must be in (0, 1], got {utilization!r}")
    seconds = workload.completion_tokens / tokens_per_s
    if prefill_tokens_per_s is not None:
        seconds += workload.prompt_tokens / prefill_tokens_per_s
    calls = utilization * SECONDS_PER_YEAR / (seconds * workload.peak_to_average)
    if not (math.isfinite(calls) and calls > 0):
        raise DecisionInputError(
            f"--completion-tokens {workload.completion_tokens:g} x --peak-to-average {workload.peak_to_average:g}: "
            "one replica would serve no call in a year; give smaller, realistic values"
        )
    return calls


class LocalOption(_Frozen):
    """One way to serve the calls yourself: a tier bought on-prem, or rented on a cloud."""

    tier: str
    kind: OptionKind
    platform: Literal["on-prem", "gke", "eks"]
    machine_type: str | None = None
    replicas_per_node: int = Field(default=1, ge=0)  # 0: one replica spans nodes_per_replica nodes
    nodes_per_replica: int = Field(default=1, ge=1)  # engine pods of one replica, one tier node each
    pods_per_node: int | None = Field(default=None, ge=1)  # engine pods one unit holds (multi-node replicas)
    calls_per_replica_year: float = Field(gt=0)
    unit_cost_per_year: float | None = Field(default=None, ge=0)  # per server (on-prem) or per node (cloud)
    fixed_cost_per_year: float = Field(default=0.0, ge=0)
    breakdown: dict[str, float] = Field(default_factory=dict)  # per unit-year, report currency
    missing_price: str | None = None  # why unit_cost_per_year is None
    notes: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def key(self) -> str:
        if self.kind == "on-prem":
            return f"{self.tier} on-prem"
        return f"{self.tier} {self.platform} {self.kind.removeprefix('cloud-')}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def priced(self) -> bool:
        return self.unit_cost_per_year is not None

    @model_validator(mode="after")
    def _packing(self) -> LocalOption:
        if self.nodes_per_replica == 1 and self.replicas_per_node < 1:
            raise ValueError("replicas_per_node must be >= 1 when a replica fits one node")
        if self.nodes_per_replica > 1 and (self.replicas_per_node != 0 or self.pods_per_node is None):
            raise ValueError("a replica that spans nodes has replicas_per_node 0 and a pods_per_node")
        return self

    @property
    def pods_per_unit(self) -> int:
        """Engine pods one server or cloud node holds (a one-node replica is one pod)."""
        return self.pods_per_node if self.nodes_per_replica > 1 else self.replicas_per_node  # type: ignore[return-value]

    @property
    def calls_per_unit_year(self) -> float:
        return self.calls_per_replica_year * self.pods_per_unit / self.nodes_per_replica

    def replicas(self, volume: float) -> int:
        return max(1, math.ceil(volume / self.calls_per_replica_year - 1e-12))

    def units_for(self, replicas: int) -> int:
        """Servers or nodes that hold `replicas` replicas (pods of several replicas may share a unit)."""
        return -(-replicas * self.nodes_per_replica // self.pods_per_unit)

    def units(self, volume: float) -> int:
        return self.units_for(self.replicas(volume))

    def replica_block(self) -> tuple[int, int]:
        """(replicas, units): the smallest whole number of units that holds a whole number of replicas;
        the cost staircase repeats every block."""
        shared = math.gcd(self.nodes_per_replica, self.pods_per_unit)
        return self.pods_per_unit // shared, self.nodes_per_replica // shared

    def annual_cost(self, volume: float) -> float | None:
        if self.unit_cost_per_year is None:
            return None
        return self.fixed_cost_per_year + self.units(volume) * self.unit_cost_per_year


def onprem_unit_cost(
    *,
    purchase: float,
    amortization_years: float,
    power_kw: float,
    pue: float,
    electricity_per_kwh: float,
    hosting_per_year: float,
) -> dict[str, float]:
    """Per replica-year costs of a bought server, by component (report currency)."""
    if amortization_years <= 0:
        raise DecisionInputError(f"--amortization-years must be > 0, got {amortization_years!r}")
    return {
        "hardware_depreciation": purchase / amortization_years,
        "power": power_kw * pue * HOURS_PER_YEAR * electricity_per_kwh,
        "hosting": hosting_per_year,
    }


def cloud_unit_cost(hourly: float) -> dict[str, float]:
    """Per node-year cost of an always-on cloud node (report currency)."""
    return {"node_hours": hourly * HOURS_PER_YEAR}


def check_volumes(volumes: list[float], flag: str = "--volumes", per: str = "year") -> list[float]:
    if not volumes:
        raise DecisionInputError(f"{flag}: give at least one volume (calls per {per})")
    for v in volumes:
        if not isinstance(v, int | float) or math.isnan(v) or math.isinf(v) or v < 0:
            raise DecisionInputError(f"{flag}: {v!r} is not allowed; volumes are calls per {per}, a finite number >= 0")
    return sorted(set(float(v) for v in volumes))
