"""Every scenario: helm lint, Kubernetes schema validation (strict, 1.30 to newest) and a clean checkov scan."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest

from infra.chart_values import CHART_DIR
from tests.charts.conftest import REPO, SCENARIOS, Rendered, helm_path, scenario_file
from tests.support.crd_schemas import custom_resource_errors, has_crd_schema
from tests.support.manifests import manifest_errors


def kubernetes_minors() -> list[str]:
    latest = kubernetes_validate.latest_version()
    major, minor = (int(p) for p in latest.split(".")[:2])
    assert (major, minor) >= (1, 30), f"kubernetes-validate ships schemas only up to {latest}"
    return [f"1.{m}" for m in range(30, minor + 1)]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(scenario: str) -> None:
    proc = subprocess.run(
        [helm_path(), "lint", "--strict", str(CHART_DIR), "-f", str(scenario_file(scenario))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_helm_lint_defaults() -> None:
    proc = subprocess.run(
        [helm_path(), "lint", "--strict", str(CHART_DIR)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("version", kubernetes_minors())
def test_scenarios_validate_strict(rendered: dict[str, Rendered], version: str) -> None:
    # Built-in kinds against the Kubernetes schemas, custom resources against their CRDs.
    errors = [
        f"{name} {doc['kind']}/{doc['metadata']['name']}: {error}"
        for name, r in rendered.items()
        for doc in r.docs
        for error in manifest_errors(doc, version)
    ]
    assert not errors, "\n".join(errors)
    assert sum(len(r.docs) for r in rendered.values()) >= 80


def _pod_templates(doc: dict) -> list[dict]:
    """A LeaderWorkerSet's leader and worker pod templates as core PodTemplate objects."""
    if doc["kind"] != "LeaderWorkerSet":
        return []
    lwt = doc["spec"]["leaderWorkerTemplate"]
    return [
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{doc['metadata']['name']}-{role}"},
            "template": lwt[f"{role}Template"],
        }
        for role in ("leader", "worker")
    ]


@pytest.mark.parametrize("version", kubernetes_minors())
def test_leaderworkerset_pod_templates_validate_strict(rendered: dict[str, Rendered], version: str) -> None:
    """The LWS CRD embeds its own PodTemplateSpec schema; each Kubernetes minor's must accept the templates too."""
    templates = [t for r in rendered.values() for d in r.docs for t in _pod_templates(d)]
    assert len(templates) >= 2
    errors = [f"{t['metadata']['name']}: {e}" for t in templates for e in manifest_errors(t, version)]
    assert not errors, "\n".join(errors)


def test_a_broken_leaderworkerset_fails_its_crd(rendered: dict[str, Rendered]) -> None:
    lws = json.loads(json.dumps(rendered["gke-pro-multinode"].one("LeaderWorkerSet", "engine")))
    assert has_crd_schema(lws) and not custom_resource_errors(lws)
    lws["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "RestartAlways"
    lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["resource"] = {}
    errors = "\n".join(custom_resource_errors(lws))
    assert "$.spec.leaderWorkerTemplate.restartPolicy" in errors
    assert "$.spec.leaderWorkerTemplate.workerTemplate.spec.containers[0]" in errors


def test_strict_validation_catches_unknown_fields(rendered: dict[str, Rendered]) -> None:
    # The validator must be able to fail: a misspelled field in a real rendered Deployment.
    doc = json.loads(json.dumps(rendered["gke-base"].one("Deployment", "engine")))
    doc["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, kubernetes_minors()[-1], strict=True)


def test_every_scenario_renders_its_kinds(rendered: dict[str, Rendered]) -> None:
    for name, r in rendered.items():
        kinds = {d["kind"] for d in r.docs}
        assert {
            "Deployment",
            "Service",
            "ConfigMap",
            "NetworkPolicy",
            "ServiceAccount",
            "PodDisruptionBudget",
        } <= kinds, name
    assert {"ScaledObject", "ServiceMonitor", "PrometheusRule", "Ingress"} <= {
        d["kind"] for d in rendered["gke-pro"].docs
    }
    assert "HorizontalPodAutoscaler" in {d["kind"] for d in rendered["eks-pro"].docs}


def checkov_bin() -> Path:
    path = REPO / ".venv-checkov" / "bin" / "checkov"
    if not path.is_file():
        pytest.fail(
            f"checkov not found at {path}: python3 -m venv .venv-checkov && .venv-checkov/bin/pip install checkov"
        )
    return path


@pytest.mark.slow
def test_checkov_clean_on_every_scenario(rendered_dir: Path) -> None:
    proc = subprocess.run(
        [str(checkov_bin()), "-d", str(rendered_dir), "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    report = json.loads(proc.stdout)
    results = (report[0] if isinstance(report, list) else report)["results"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}" for c in results["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert len(results["passed_checks"]) > 1000
    for skip in results["skipped_checks"]:  # a skip is allowed only with a written reason
        reason = skip["check_result"].get("suppress_comment", "")
        assert len(reason) > 20, f"{skip['check_id']} on {skip['resource']} skipped without a reason"
    # Every pod is covered by a NetworkPolicy (checkov's graph check ran and passed).
    assert any(c["check_id"] == "CKV2_K8S_6" for c in results["passed_checks"])
