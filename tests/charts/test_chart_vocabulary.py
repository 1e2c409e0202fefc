"""The chart's own enums and router defaults agree with the Python declarations they mirror.

values.schema.json and values.yaml stay the chart's (GitOps and kubectl users read them without Python);
these tests hold each name and default equal to the one place it is declared in Python."""

from __future__ import annotations

import json
from typing import get_args

import pytest
import yaml

from inference.engines import ENGINE_TYPES, SERVER_QUANTIZATIONS, EngineType, ServerQuantization
from inference.router.config import DATA_CLASSES, AuthConfig, CloudConfig, PolicyConfig, ServerConfig
from inference.server.config import ServerConfig as ModelServerConfig
from infra.catalog import load_catalog
from infra.catalog.schema import PLATFORMS
from infra.chart_values import CHART_DIR, SERVER_QUANTIZATION, ChartOptions
from infra.planner.quantization import QUANT_SPECS
from infra.stack_config import StackConfig, StackConfigError, validate_stack_config

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())


def _enum(*path: str) -> list:
    node = SCHEMA
    for key in path:
        node = node["properties"][key]
    return node["enum"]


def test_platforms() -> None:
    assert _enum("platform") == list(PLATFORMS)
    assert get_args(StackConfig.model_fields["platform"].annotation) == PLATFORMS
    assert get_args(ChartOptions.model_fields["platform"].annotation) == PLATFORMS
    assert set(load_catalog().tier("base").machines) == set(PLATFORMS)


def test_engine_types() -> None:
    assert _enum("engine", "type") == list(ENGINE_TYPES) == list(get_args(EngineType))
    assert VALUES["engine"]["type"] in ENGINE_TYPES
    assert {spec.engine for spec in QUANT_SPECS.values()} <= set(ENGINE_TYPES)  # the planner's engine names


def test_server_quantizations() -> None:
    assert _enum("engine", "server", "quantization") == list(SERVER_QUANTIZATIONS)
    assert get_args(ModelServerConfig.model_fields["quantization"].annotation) == get_args(ServerQuantization)
    # what the chart options hand the server is a name the server loads, for each planner format it runs
    assert set(SERVER_QUANTIZATION.values()) <= set(SERVER_QUANTIZATIONS)


def test_tiers_come_from_the_catalog() -> None:
    """The stack config knows the tiers of infra/catalog/tiers.yaml, and names them when refusing one."""
    stack = {"platform": "existing", "model": "r1-distill-qwen-7b", "gpusAlreadyEnabled": True}
    tiers = list(load_catalog().tiers)
    for tier in tiers:
        assert validate_stack_config({**stack, "tier": tier}, {"kubeconfig"}).tier == tier
    with pytest.raises(StackConfigError) as caught:
        validate_stack_config({**stack, "tier": "gold"}, {"kubeconfig"})
    assert all(repr(tier) in str(caught.value) for tier in tiers), caught.value


def test_data_classes() -> None:
    policy = SCHEMA["properties"]["router"]["properties"]["policy"]["properties"]
    assert policy["defaultClass"]["enum"] == list(DATA_CLASSES)
    assert policy["cloudAllowed"]["items"]["enum"] == list(DATA_CLASSES)


def test_router_defaults_in_values_yaml_are_the_routers() -> None:
    """values.yaml's router section renders the router config (configmap-router.yaml): its defaults are
    config.py's pydantic defaults, so a chart install and `make run` route alike."""
    router = VALUES["router"]
    policy = PolicyConfig()
    assert router["policy"] == {"defaultClass": policy.default_class, "cloudAllowed": policy.cloud_allowed}
    cloud = CloudConfig(api_key="${DEEPSEEK_API_KEY}")
    assert router["cloud"]["baseUrl"] == cloud.base_url
    assert router["cloud"]["models"] == cloud.models
    assert router["auth"]["keysSha256"] == AuthConfig().keys_sha256
    assert router["port"] == ServerConfig().port
