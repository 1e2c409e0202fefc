"""The router behind a Gateway API HTTPRoute: the values schema checks parentRefs and hostnames as the CRD does,
the route validates against the upstream CRD, and the router's NetworkPolicy admits the Gateway's proxies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from infra.chart_values import CHART_DIR
from tests.charts.conftest import NAMESPACE, Rendered, helm_template, parse
from tests.support.crd_schemas import CRD_DIR, validate_custom_resource

ROUTE = {
    "enabled": True,
    "parentRefs": [{"name": "public-gw", "namespace": "gateways"}],
    "hostnames": ["llm.example.com"],
}


def _render(tmp: Path, route: dict, network_policy: dict | None = None) -> Rendered:
    values = {"router": {"httpRoute": route}, "networkPolicy": network_policy or {}}
    proc = helm_template(values=values, tmp=tmp)
    assert proc.returncode == 0, proc.stderr
    return parse(proc.stdout)


def _router_peers(r: Rendered) -> list[dict]:
    [rule] = r.one("NetworkPolicy", "router")["spec"]["ingress"]
    return rule["from"]


def _namespace_peer(name: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def test_a_scenario_renders_the_httproute_and_it_validates(rendered: dict[str, Rendered]) -> None:
    route = rendered["airgapped"].one("HTTPRoute", "router")
    validate_custom_resource(route)
    assert route["spec"]["parentRefs"] == [{"name": "site-gateway", "namespace": "gateways", "sectionName": "https"}]
    [rule] = route["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": "ds-dsdeploy-router", "port": 8080}]
    assert _namespace_peer("gateways") in _router_peers(rendered["airgapped"])


def test_no_gateway_peer_without_the_route(rendered: dict[str, Rendered]) -> None:
    assert not rendered["gke-base"].kind("HTTPRoute")
    assert all("gateways" not in json.dumps(p) for p in _router_peers(rendered["gke-base"]))


def test_gateway_namespaces_are_admitted_once_each(tmp_path: Path) -> None:
    route = {
        "enabled": True,
        "parentRefs": [
            {"name": "a", "namespace": "edge"},
            {"name": "b", "namespace": "edge", "sectionName": "https"},
            {"name": "local-gw"},  # the release's own namespace
            {"name": "mesh", "kind": "Service", "group": ""},  # a GAMMA mesh parent: no Gateway proxies
        ],
    }
    r = _render(tmp_path, route)
    gateway_peers = [p for p in _router_peers(r) if p in (_namespace_peer("edge"), _namespace_peer(NAMESPACE))]
    assert gateway_peers == [_namespace_peer("edge"), _namespace_peer(NAMESPACE)]
    assert _namespace_peer("mesh") not in _router_peers(r)
    validate_custom_resource(r.one("HTTPRoute", "router"))


def test_gateway_peers_can_be_given(tmp_path: Path) -> None:
    # Envoy Gateway's default: the proxies run in the controller's namespace, not the Gateway's.
    envoy = [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "envoy"}},
        }
    ]
    peers = _router_peers(_render(tmp_path, ROUTE, {"gatewayFrom": envoy}))
    assert envoy[0] in peers and _namespace_peer("gateways") not in peers


@pytest.mark.parametrize(
    ("route", "where"),
    [
        ({"parentRefs": [{"namespace": "gateways"}]}, "name"),
        ({"parentRefs": [{"name": "gw", "gateway": "x"}]}, "gateway"),
        ({"parentRefs": [{"name": "gw", "namespace": "Gateways"}]}, "namespace"),
        ({"parentRefs": [{"name": "gw", "sectionName": "HTTPS_443"}]}, "sectionName"),
        ({"parentRefs": [{"name": "gw", "port": 0}]}, "port"),
        ({"parentRefs": [{"name": "gw", "kind": "gate way"}]}, "kind"),
        ({"parentRefs": [{"name": "gw"}], "hostnames": ["LLM.example.com"]}, "hostnames/0"),
        ({"parentRefs": [{"name": "gw"}], "hostnames": ["https://llm.example.com"]}, "hostnames/0"),
        ({"parentRefs": [{"name": "gw"}], "hostnames": ["llm.example.com:443"]}, "hostnames/0"),
    ],
)
def test_schema_refuses_what_the_crd_would(route: dict, where: str, tmp_path: Path) -> None:
    proc = helm_template(values={"router": {"httpRoute": {"enabled": True, **route}}}, tmp=tmp_path)
    assert proc.returncode != 0, f"accepted {route}"
    assert "schema" in proc.stderr and "httpRoute" in proc.stderr and where in proc.stderr, proc.stderr


def _crd_spec() -> dict:
    crd = yaml.load(
        (CRD_DIR / "gateway.networking.k8s.io_httproutes.yaml").read_text(),
        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
    )
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


def _constraints(schema: dict) -> dict:
    keep = ("type", "pattern", "minLength", "maxLength", "minimum", "maximum", "maxItems", "required")
    out = {k: v for k, v in schema.items() if k in keep}
    if "properties" in schema:
        out["properties"] = {name: _constraints(sub) for name, sub in schema["properties"].items()}
    return out


def test_chart_schema_states_the_crds_constraints() -> None:
    chart = json.loads((CHART_DIR / "values.schema.json").read_text())
    spec = _crd_spec()
    assert _constraints(chart["$defs"]["gatewayParentRef"]) == _constraints(spec["parentRefs"]["items"])
    assert _constraints(chart["$defs"]["gatewayHostname"]) == _constraints(spec["hostnames"]["items"])
    route = chart["properties"]["router"]["properties"]["httpRoute"]["properties"]
    assert route["parentRefs"]["maxItems"] == spec["parentRefs"]["maxItems"]
    assert route["hostnames"]["maxItems"] == spec["hostnames"]["maxItems"]
