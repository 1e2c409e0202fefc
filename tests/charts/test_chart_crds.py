"""Every custom resource the chart renders validates against its upstream CRD (tests/support/crds/)."""

from __future__ import annotations

import copy
import re

import pytest

from tests.charts.conftest import Rendered
from tests.support.crd_schemas import (
    CRD_DIR,
    CustomResourceError,
    custom_resource_errors,
    has_crd_schema,
    known_kinds,
    validate_custom_resource,
)

BUILTIN_GROUPS = {"", "apps", "batch", "networking.k8s.io", "policy", "autoscaling", "rbac.authorization.k8s.io"}


def custom_resources(r: Rendered) -> list[dict]:
    return [d for d in r.docs if d["apiVersion"].rpartition("/")[0] not in BUILTIN_GROUPS]


def test_every_rendered_custom_resource_validates(rendered: dict[str, Rendered]) -> None:
    errors, seen = [], set()
    for name, r in rendered.items():
        for doc in custom_resources(r):
            seen.add(doc["kind"])
            errors += [f"{name}: {e}" for e in custom_resource_errors(doc)]
    assert not errors, "\n".join(errors)
    assert {"ServiceMonitor", "PrometheusRule", "ScaledObject", "HTTPRoute"} <= seen


def test_every_custom_kind_the_chart_can_render_has_a_schema() -> None:
    kinds = {k for _, k in known_kinds()}
    assert {"ServiceMonitor", "PrometheusRule", "ScaledObject", "HTTPRoute"} <= kinds
    readme = (CRD_DIR / "README.md").read_text()
    for path in CRD_DIR.glob("*.yaml"):
        assert f"`{path.name}`" in readme, f"{path.name} has no source/version/license row in {CRD_DIR}/README.md"


def test_every_cel_rule_of_the_kept_crds_compiles() -> None:
    # A rule cel-python cannot parse would be reported on every object; find it here, not in a chart test.
    from tests.support import crd_schemas

    rules: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            rules.update(r["rule"] for r in node.get("x-kubernetes-validations", []) if "oldSelf" not in r["rule"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for schema in crd_schemas._schemas().values():
        walk(schema)
    assert len(rules) > 40
    for rule in rules:
        crd_schemas._cel_program(rule)


def _scaled_object(rendered: dict[str, Rendered]) -> dict:
    return copy.deepcopy(rendered["gke-pro"].one("ScaledObject", "engine"))


def test_unknown_field_is_an_error_with_its_path(rendered: dict[str, Rendered]) -> None:
    doc = copy.deepcopy(rendered["gke-pro"].one("ServiceMonitor", "router"))
    doc["spec"]["endpoints"][0]["scrapeInterval"] = "30s"  # the field is `interval`
    doc["spec"]["selecter"] = {}
    with pytest.raises(CustomResourceError) as info:
        validate_custom_resource(doc)
    message = str(info.value)
    assert "2 schema error(s)" in message
    assert "$.spec.endpoints[0]: Additional properties are not allowed ('scrapeInterval'" in message
    assert "$.spec: Additional properties are not allowed ('selecter'" in message


def test_types_enums_and_string_maps_are_checked(rendered: dict[str, Rendered]) -> None:
    doc = _scaled_object(rendered)
    doc["spec"]["minReplicaCount"] = "1"
    doc["spec"]["triggers"][0]["metadata"]["threshold"] = 5  # trigger metadata is a map of strings
    doc["metadata"]["labels"]["bad"] = 1
    errors = custom_resource_errors(doc)
    paths = {e.split(":", 1)[0] for e in errors}
    # The CEL rule on spec (min <= max) is not run on a mistyped spec: only the type error is reported.
    assert paths == {"$.spec.minReplicaCount", "$.spec.triggers[0].metadata.threshold", "$.metadata.labels.bad"}, errors
    monitor = copy.deepcopy(rendered["gke-pro"].one("ServiceMonitor", "engine"))
    monitor["spec"]["endpoints"][0]["scheme"] = "tcp"
    [error] = custom_resource_errors(monitor)
    assert error.startswith("$.spec.endpoints[0].scheme: 'tcp' is not one of ['http', 'https', 'HTTP', 'HTTPS']")


def test_cel_rules_are_evaluated(rendered: dict[str, Rendered]) -> None:
    doc = _scaled_object(rendered)
    doc["spec"]["minReplicaCount"], doc["spec"]["maxReplicaCount"] = 5, 2
    assert custom_resource_errors(doc) == ["$.spec: minReplicaCount must be less than or equal to maxReplicaCount"]


def test_httproute_rules_use_the_crd_defaults() -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "svc", "port": 8080}]}]},
    }
    # group/kind of the backendRef and the match default (PathPrefix /) come from the CRD's defaults.
    validate_custom_resource(route)
    route["spec"]["rules"][0]["backendRefs"][0].pop("port")
    route["spec"]["parentRefs"].append({"name": "gw"})
    route["spec"]["hostnames"] = ["LLM.example.com"]
    errors = custom_resource_errors(route)
    assert len(errors) == 3, errors
    assert any(e.startswith("$.spec.rules[0].backendRefs[0]: Must have port for Service reference") for e in errors)
    assert any(e.startswith("$.spec.parentRefs: sectionName must be unique") for e in errors)
    assert any(e.startswith("$.spec.hostnames[0]: 'LLM.example.com' does not match") for e in errors)


def test_list_keys_and_int_or_string() -> None:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "m"},
        "spec": {"selector": {}, "endpoints": [{"targetPort": 8080}, {"targetPort": "http"}]},
    }
    validate_custom_resource(rule)
    rule["spec"]["endpoints"][0]["targetPort"] = 1.5
    [error] = custom_resource_errors(rule)
    assert error.startswith("$.spec.endpoints[0].targetPort: 1.5 is not valid under any of the given schemas")


def test_unknown_kind_and_bad_metadata_are_refused() -> None:
    with pytest.raises(AssertionError, match=r"no CRD schema for apiVersion 'example.com/v1' kind 'Widget'"):
        validate_custom_resource({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    with pytest.raises(ValueError, match=re.escape("$.metadata.name: 'Bad_Name' does not match")):
        validate_custom_resource(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {"name": "Bad_Name"},
                "spec": {},
            }
        )
    assert has_crd_schema({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject"})
    assert not has_crd_schema({"apiVersion": "apps/v1", "kind": "Deployment"})
