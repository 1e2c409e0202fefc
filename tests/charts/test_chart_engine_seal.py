"""The engine sealed off, in every scenario: no route out (the download runs in a pod of its own), no cloud
identity, and an API that answers only the router's key (a Secret the chart makes, or one the user names)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml

from inference.router.config import load_router_config
from tests.charts.conftest import CHART_DIR, SCENARIOS, Rendered, helm_template, parse
from tests.charts.engine_seal import (
    assert_download_has_its_egress,
    assert_engine_sealed,
    engine_key_refs,
    engine_templates,
)
from tests.charts.test_chart_objects import values_of

DEFAULT_DNS = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["networkPolicy"]["dnsTo"]
GUARD = "--middleware=engine_key_guard.EngineKeyGuard"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_engine_reaches_nothing_but_dns_and_its_group(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    assert_engine_sealed(r.docs, values_of(scenario).get("networkPolicy", {}).get("dnsTo", DEFAULT_DNS))
    downloads = (
        not values_of(scenario).get("modelCache", {}).get("airgapped")
        and values_of(scenario).get("model", {}).get("source") != "none"
    )
    if downloads:
        assert_download_has_its_egress(r.docs)
    else:
        assert not r.kind("Job")


def test_the_sealing_check_catches_an_engine_with_egress(rendered: dict[str, Rendered]) -> None:
    """The check above is not vacuous: the old design (the engine pod downloading itself) fails it."""
    docs = [yaml.safe_load(yaml.safe_dump(d)) for d in rendered["gke-base"].docs]
    engine_policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-engine"))
    engine_policy["spec"]["egress"] = [
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    ]
    with pytest.raises(AssertionError, match="reaches nothing but DNS"):
        assert_engine_sealed(docs, DEFAULT_DNS)


def _key_setup(r: Rendered) -> tuple[str, str]:
    refs = engine_key_refs(r.docs)
    roles = {role for role, _ in engine_templates(r.docs)}
    api = "engine/leader" if "leader" in roles else "engine"
    assert set(refs) == {api, "router"}, refs  # a multi-node worker serves no API and gets no key
    assert refs[api] == refs["router"]
    return refs["router"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_only_the_router_and_the_engine_hold_the_engine_key(
    rendered: dict[str, Rendered], scenario: str, tmp_path: Path
) -> None:
    r = rendered[scenario]
    name, key = _key_setup(r)
    [secret] = r.kind("Secret")
    assert secret["metadata"]["name"] == name == "ds-dsdeploy-engine-key"
    assert re.fullmatch(r"[A-Za-z0-9]{48}", base64.b64decode(secret["data"][key]).decode())
    text = r.one("ConfigMap", "router")["data"]["router.yaml"]
    path = tmp_path / "router.yaml"
    path.write_text(text)
    cfg = load_router_config(path, environ={"DEEPSEEK_API_KEY": "k", "DSDEPLOY_ENGINE_KEY": "the-engine-key"})
    assert cfg.upstreams[0].api_key == "the-engine-key"
    for role, template in engine_templates(r.docs):
        c = template["spec"]["containers"][0]
        if c["command"] == ["vllm", "serve"] and role != "worker":
            # vLLM's --api-key leaves /invocations open: every path but /health and /metrics goes through the guard
            assert GUARD in c["args"] and {"name": "PYTHONPATH", "value": "/opt/dsdeploy"} in c["env"]
            assert {"name": "download-script", "mountPath": "/opt/dsdeploy", "readOnly": True} in c["volumeMounts"]
        else:
            assert GUARD not in c.get("args", [])


def test_the_guard_ships_in_the_charts_config_map(rendered: dict[str, Rendered]) -> None:
    data = rendered["gke-base"].one("ConfigMap", "model-download")["data"]
    assert data["engine_key_guard.py"] == (CHART_DIR / "files" / "engine_key_guard.py").read_text()


def test_each_render_without_a_cluster_draws_a_new_key(tmp_path: Path) -> None:
    """helm template has no lookup: GitOps renders must name their own Secret (engine.apiKey.existingSecret)."""
    keys = {parse(helm_template().stdout).kind("Secret")[0]["data"]["api-key"] for _ in range(2)}
    assert len(keys) == 2


def test_an_existing_secret_replaces_the_charts(tmp_path: Path) -> None:
    proc = helm_template(values={"engine": {"apiKey": {"existingSecret": "engine-key", "key": "token"}}}, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = parse(proc.stdout)
    assert not r.kind("Secret")
    assert _key_setup(r) == ("engine-key", "token")


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"engine": {"apiKey": {"existingSecret": "sk-" + "a" * 40}}}, "/engine/apiKey/existingSecret"),
        ({"engine": {"apiKey": {"key": ""}}}, "/engine/apiKey/key"),
        ({"engine": {"apiKey": {"value": "literal"}}}, "/engine/apiKey"),
    ],
)
def test_engine_key_values_that_cannot_work_are_refused(values: dict, where: str, tmp_path: Path) -> None:
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode != 0 and where in proc.stderr, proc.stderr


def test_the_monitoring_namespace_reaches_the_api_port_only_through_the_key(rendered: dict[str, Rendered]) -> None:
    """A NetworkPolicy cannot filter paths, and vLLM 0.32 serves /metrics on the API port (it has no metrics
    port of its own): monitoring is admitted on that port, and the guard leaves it /metrics and /health only."""
    r = rendered["gke-pro"]
    ingress = r.one("NetworkPolicy", "engine")["spec"]["ingress"]
    assert [p["port"] for rule in ingress for p in rule["ports"]] == [8000]
    monitor = r.one("ServiceMonitor", "engine")["spec"]["endpoints"]
    assert [(e["port"], e["path"]) for e in monitor] == [("http", "/metrics")]
