"""The GitOps examples point at the real chart and their values render and validate."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from infra.chart_values import CHART_DIR
from tests.charts.conftest import REPO, helm_template, parse
from tests.support.manifests import validate_manifest

EXAMPLES = REPO / "examples"


def validate_all(text: str) -> int:
    r = parse(text)
    for doc in r.docs:
        validate_manifest(doc)
    return len(r.docs)


def test_argocd_application_renders(tmp_path: Path) -> None:
    app = yaml.safe_load((EXAMPLES / "argocd" / "application.yaml").read_text())
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    source = app["spec"]["source"]
    assert (REPO / source["path"]).resolve() == CHART_DIR
    files = []
    for f in source["helm"]["valueFiles"]:
        assert (CHART_DIR / f).is_file(), f
        files += ["-f", str(CHART_DIR / f)]
    proc = helm_template(*files, values=source["helm"]["valuesObject"], tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert validate_all(proc.stdout) > 15
    r = parse(proc.stdout)
    assert not r.kind("Pod"), "Argo CD does not run helm tests; the example turns them off"
    # Without lookup the chart's own engine key would change at every render: the example names a Secret.
    assert not r.kind("Secret")
    router_env = r.one("Deployment", "router")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "dsdeploy-engine-key", "key": "api-key"} in [e["valueFrom"]["secretKeyRef"] for e in router_env]
    # Replica counts are ignored only where an autoscaler owns them (the chart then leaves them out);
    # an unscoped rule would hide engine.replicas changes.
    deployments = {d["metadata"]["name"].replace("ds-", "", 1): d for d in r.kind("Deployment")}
    ignored = [i for i in app["spec"].get("ignoreDifferences", []) if i["kind"] == "Deployment"]
    assert ignored
    for rule in ignored:
        assert rule.get("name"), f"unscoped ignoreDifferences {rule}"
        assert "replicas" not in deployments[rule["name"]]["spec"], f"{rule['name']} has no autoscaler"
    assert "replicas" in deployments["dsdeploy-engine"]["spec"]
    assert "dsdeploy-engine" not in [rule["name"] for rule in ignored]


def test_flux_helmrelease_renders(tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "flux" / "helmrelease.yaml").read_text()) if d]
    repo = next(d for d in docs if d["kind"] == "GitRepository")
    release = next(d for d in docs if d["kind"] == "HelmRelease")
    assert release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    chart = release["spec"]["chart"]["spec"]
    assert (REPO / chart["chart"]).resolve() == CHART_DIR
    assert chart["sourceRef"]["name"] == repo["metadata"]["name"]
    proc = helm_template(values=release["spec"]["values"], tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert validate_all(proc.stdout) > 15
    # Flux waits for the Deployments (and Jobs): the timeout must cover the download's deadline plus the
    # engine's startup window, or remediation uninstalls a healthy install mid-download.
    r = parse(proc.stdout)
    download = r.download_container()
    deadline = int(next(a for a in download["args"] if a.startswith("--deadline=")).split("=")[1])
    probe = r.engine_pod_spec()["containers"][0]["startupProbe"]
    assert go_duration(release["spec"]["timeout"]) >= deadline + probe["periodSeconds"] * probe["failureThreshold"]
    assert release["spec"]["upgrade"]["remediation"]["strategy"] == "rollback"


def go_duration(text: str) -> int:
    """Seconds of a Go duration such as 4h, 90m, 1h30m."""
    parts = re.findall(r"(\d+)([hms])", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
