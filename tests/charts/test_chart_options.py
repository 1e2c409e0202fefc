"""Every chart option, declared once in infra/chart_options.py (and ChartOptions), works through each way in:
the `dsdeploy values` flags, the stack config and the program's mapping, and the chart values at its path,
which values.schema.json knows with the same bounds."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from dsdeploy.cli import main
from infra.app import OPTION_KEYS, chart_options
from infra.chart_options import STACK_OPTIONS, Option, StackChartOptions, options_of
from infra.chart_values import CHART_DIR, ChartOptions, chart_values
from infra.cloud import GpuNodeFacts
from infra.planner import plan_deployment
from infra.stack_config import StackConfig, validate_stack_config

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
OPTIONS = options_of(ChartOptions)
MODEL, TIER = "r1-distill-qwen-7b", "base"


def _at(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for key in path.split("."):
        node = node[key]
    return node


def _schema_at(path: str) -> dict[str, Any]:
    node = SCHEMA
    for key in path.split("."):
        node = node["properties"][key]
        if "$ref" in node:
            node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]] | {k: v for k, v in node.items() if k != "$ref"}
    return node


def _expected(option: Option) -> Any:
    return option.example if option.rendered is None else option.rendered


def _given(name: str) -> dict[str, Any]:
    """ChartOptions with one option at its example (and what that example needs: min may not exceed max)."""
    given = {"platform": "gke", name: OPTIONS[name][1].example}
    if name == "engine_replicas_min":
        given["engine_replicas_max"] = OPTIONS["engine_replicas_max"][1].example
    return given


def _examples(names: Any) -> dict[str, Any]:
    return {name: OPTIONS[name][1].example for name in names}


def test_the_table_covers_every_option_and_each_example_differs_from_the_default() -> None:
    assert set(OPTIONS) == set(ChartOptions.model_fields), "a ChartOptions field without its Option declaration"
    assert set(STACK_OPTIONS) == set(StackChartOptions.model_fields) <= set(StackConfig.model_fields)
    for name, (field, option) in OPTIONS.items():
        assert option.example != field.get_default(call_default_factory=True), name
        ChartOptions(**_given(name))  # the example is valid


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_the_chart_schema_knows_each_option_with_its_bounds(name: str) -> None:
    field, option = OPTIONS[name]
    node = _schema_at(option.chart)
    assert node.get("type") or node.get("anyOf") or node.get("pattern") or node.get("enum"), (name, node)
    bounds = {type(m).__name__: m for m in field.metadata}
    if option.rendered is not None:  # the chart holds what the option becomes (model_cache_min_gib: a size)
        return
    if "Ge" in bounds:
        assert node["minimum"] == bounds["Ge"].ge, name
    if "Le" in bounds:
        assert node["maximum"] == bounds["Le"].le, name


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_each_option_reaches_the_chart_values_at_its_path(name: str) -> None:
    option = OPTIONS[name][1]
    plan = plan_deployment(MODEL, TIER)
    assert _at(chart_values(plan, ChartOptions(**_given(name))), option.chart) == _expected(option)


def test_every_flag_of_dsdeploy_values_sets_its_option(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["values", "--model", MODEL, "--tier", TIER]
    flagged = {name: option for name, (_, option) in OPTIONS.items() if option.flag}
    for name, option in flagged.items():
        if name.startswith("engine_replicas"):
            continue
        if option.example is True:
            argv.append(option.flag)
        elif isinstance(option.example, dict):
            argv += [item for key, value in option.example.items() for item in (option.flag, f"{key}={value}")]
        else:
            argv += [option.flag, str(option.example)]
    low, high = (OPTIONS[f"engine_replicas_{end}"][1].example for end in ("min", "max"))
    argv += ["--engine-replicas", f"{low}:{high}"]
    assert main(argv) == 0, capsys.readouterr().err
    values = yaml.safe_load(capsys.readouterr().out)
    for name, option in flagged.items():
        assert _at(values, option.chart) == _expected(option), name
    # the options without a flag are the ones the program takes from the cloud and platform layers
    assert {name for name, (_, option) in OPTIONS.items() if not option.flag} == {
        "gpu_tolerations",
        "model_cache_min_gib",
    }


def test_every_stack_key_of_an_option_reaches_the_chart(tmp_path: Any) -> None:
    keys = {
        StackChartOptions.model_fields[name].alias or name: example
        for name, example in _examples(STACK_OPTIONS).items()
    }
    cfg = validate_stack_config({"tier": TIER, "model": MODEL, "region": "us-east-1", **keys}, {"deepseekApiKey"})
    plan = plan_deployment(cfg.model, cfg.tier)
    values = chart_values(plan, chart_options(cfg, GpuNodeFacts(labels={}), "efs"))
    for name in STACK_OPTIONS:
        option = OPTIONS[name][1]
        assert getattr(cfg, name) == option.example, name
        assert _at(values, option.chart) == _expected(option), name
    assert {name: OPTION_KEYS[name] for name in STACK_OPTIONS} == {
        name: StackChartOptions.model_fields[name].alias or name for name in STACK_OPTIONS
    }
    assert {OPTION_KEYS[name] for name in OPTIONS if name in OPTION_KEYS} <= set(StackConfig.model_fields) | {
        field.alias for field in StackConfig.model_fields.values()
    }
