"""Price sheets as validated data: API token prices and local (hardware, cloud, running) prices.

Two YAML files ship with the package (``api_prices.yaml``, ``local_prices.yaml``); users pass their
own files of the same shape. Every price carries its currency, source and the day it was read.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from infra.catalog.schema import CloudPlatform
from infra.decision.currency import Currency, DecisionInputError, ExchangeRate

HERE = Path(__file__).resolve().parent
API_PRICES_FILE = HERE / "api_prices.yaml"
# The article's own basis, the default sheet: CNY 0.12 per 1,000 tokens (api_prices.yaml).
ARTICLE_PRESET = "article-flat"
# Former preset names, refused with the new one named (a silent alias would keep an unexplained name alive).
RENAMED_PRESETS = {"mission-flat": ARTICLE_PRESET}
LOCAL_PRICES_FILE = HERE / "local_prices.yaml"
Basis = Literal["published", "quote", "estimate", "assumption"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # a YAML .inf is no price


class TokenPrices(_Strict):
    """One API model's prices per million tokens, in one currency."""

    currency: Currency
    input_cache_hit_per_mtok: float = Field(ge=0)
    input_cache_miss_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    source: str = Field(min_length=1)
    read_on: dt.date
    effective: dt.date | None = None
    note: str | None = None


class ApiPriceSheet(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    default_model: str
    models: dict[str, TokenPrices] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_known(self) -> ApiPriceSheet:
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not one of the models: {sorted(self.models)}")
        return self

    def model_prices(self, model: str | None) -> tuple[str, TokenPrices]:
        name = model or self.default_model
        if name not in self.models:
            raise DecisionInputError(
                f"--api-model {name!r} is not in price sheet {self.name!r}; allowed: {', '.join(sorted(self.models))}"
            )
        return name, self.models[name]


class SourcedAmount(_Strict):
    amount: float = Field(ge=0)
    currency: Currency
    source: str = Field(min_length=1)
    read_on: dt.date
    as_of: dt.date | None = None
    basis: Basis
    note: str | None = None


class PowerDraw(_Strict):
    amount: float = Field(ge=0, description="average electrical draw of one server, kW")
    source: str = Field(min_length=1)
    basis: Basis


class TierHardware(_Strict):
    gpu: SourcedAmount  # price of ONE GPU; multiplied by the tier's GPU count
    host: SourcedAmount  # the server around the GPUs
    power_kw: PowerDraw


class CloudMachinePrice(_Strict):
    platform: CloudPlatform
    region: str
    currency: Currency
    on_demand_per_hour: float | None = Field(default=None, ge=0)
    spot_per_hour: float | None = Field(default=None, ge=0)
    source: str = Field(min_length=1)
    read_on: dt.date
    as_of: dt.date | None = None
    basis: Basis
    note: str | None = None


class RunningCosts(_Strict):
    electricity_per_kwh: SourcedAmount
    pue: float = Field(ge=1.0, le=3.0)
    hosting_per_server_year: SourcedAmount
    ops_per_year: SourcedAmount


class LocalPriceSheet(_Strict):
    exchange_rate: ExchangeRate
    hardware: dict[str, TierHardware]
    cloud: dict[str, CloudMachinePrice]
    running: RunningCosts


def _read_yaml(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DecisionInputError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DecisionInputError(f"{what} {path} is not valid YAML: {exc}") from None


def _errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
        lines.append(f"  {loc}: {err['msg']}{shown}")
    return "\n".join(lines)


@cache
def _presets() -> dict[str, Any]:
    data = _read_yaml(API_PRICES_FILE, "API price presets")
    if not isinstance(data, dict):
        raise DecisionInputError(f"{API_PRICES_FILE}: the top level must be a mapping of preset names")
    return data


def api_presets() -> tuple[str, ...]:
    return tuple(_presets())


def load_api_prices(preset_or_path: str = ARTICLE_PRESET) -> ApiPriceSheet:
    """A preset name (``article-flat``, ``deepseek``) or the path of a custom sheet."""
    presets = _presets()
    if preset_or_path in RENAMED_PRESETS and not Path(preset_or_path).exists():
        raise DecisionInputError(
            f"--api-prices {preset_or_path!r} was renamed: use {RENAMED_PRESETS[preset_or_path]!r} (the same prices)"
        )
    if preset_or_path in presets:
        raw = dict(presets[preset_or_path])
        raw.setdefault("name", preset_or_path)
        source = f"{API_PRICES_FILE.name} preset {preset_or_path!r}"
    else:
        path = Path(preset_or_path)
        if not path.exists():
            raise DecisionInputError(
                f"--api-prices {preset_or_path!r} is neither a preset ({', '.join(presets)}) nor an existing file"
            )
        raw = _read_yaml(path, "API price sheet")
        if not isinstance(raw, dict):
            raise DecisionInputError(f"API price sheet {path}: the top level must be a mapping")
        raw.setdefault("name", path.stem)
        source = f"API price sheet {path}"
    try:
        return ApiPriceSheet.model_validate(raw)
    except ValidationError as exc:
        raise DecisionInputError(_errors(exc, source)) from None


def load_local_prices(path: str | Path | None = None) -> LocalPriceSheet:
    """The shipped local price sheet, or a custom file of the same shape."""
    p = LOCAL_PRICES_FILE if path is None else Path(path)
    raw = _read_yaml(p, "local price sheet")
    try:
        return LocalPriceSheet.model_validate(raw)
    except ValidationError as exc:
        raise DecisionInputError(_errors(exc, f"local price sheet {p}")) from None
