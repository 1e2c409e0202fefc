"""The GitOps examples point at the real chart and their values render and validate."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml

from infra.chart_values import CHART_DIR
from tests.charts.conftest import REPO, helm_template, parse

EXAMPLES = REPO / "examples"


def validate_all(text: str) -> int:
    r = parse(text)
    for doc in r.docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
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
    assert not parse(proc.stdout).kind("Pod"), "Argo CD does not run helm tests; the example turns them off"


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
