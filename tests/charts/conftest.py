"""Shared fixtures of the chart tests: helm, rendered scenarios (rendered once per session), checkov."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra.chart_values import CHART_DIR
from tests.charts.download_fakes import FakeHub, load_script

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = ("gke-base", "gke-pro", "eks-pro", "onprem-cpu", "edge-server", "airgapped", "gke-pro-multinode")
NAMESPACE = "dsdeploy"
RELEASE = "ds"


def helm_path() -> str:
    """helm from .venv/bin (scripts/install_tools.py) or PATH; missing helm fails the test, never skips it."""
    for candidate in (REPO / ".venv" / "bin" / "helm", Path(sys.executable).parent / "helm"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("helm")
    if not found:
        pytest.fail("helm not found in .venv/bin or on PATH: run `python scripts/install_tools.py --bin-dir .venv/bin`")
    return found


@dataclass(frozen=True)
class Rendered:
    text: str
    docs: list[dict[str, Any]]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, component: str) -> dict[str, Any]:
        found = [d for d in self.kind(kind) if d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
        assert len(found) == 1, f"expected one {kind} of component {component}, found {len(found)}"
        return found[0]

    def download_container(self) -> dict[str, Any]:
        """The container that downloads the weights: the download Job's (the engine pod never downloads)."""
        return self.one("Job", "model-download")["spec"]["template"]["spec"]["containers"][0]

    def pod_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(kind/name, pod spec) of every workload, the helm test Pod and a LeaderWorkerSet's leader and
        worker templates included."""
        out = []
        for d in self.docs:
            name = f"{d['kind']}/{d['metadata']['name']}"
            if d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
                out.append((name, d["spec"]["template"]["spec"]))
            elif d["kind"] == "Pod":
                out.append((name, d["spec"]))
            elif d["kind"] == "LeaderWorkerSet":
                templates = d["spec"]["leaderWorkerTemplate"]
                out += [
                    (f"{name}/leader", templates["leaderTemplate"]["spec"]),
                    (f"{name}/worker", templates["workerTemplate"]["spec"]),
                ]
        return out

    def engine_template(self, role: str = "leader") -> dict[str, Any]:
        """The engine's pod template: the Deployment's, or a LeaderWorkerSet's leader or worker template."""
        if self.kind("LeaderWorkerSet"):
            return self.one("LeaderWorkerSet", "engine")["spec"]["leaderWorkerTemplate"][f"{role}Template"]
        return self.one("Deployment", "engine")["spec"]["template"]

    def engine_pod_spec(self, role: str = "leader") -> dict[str, Any]:
        return self.engine_template(role)["spec"]


def helm_template(
    *args: str, values: dict[str, Any] | None = None, tmp: Path | None = None
) -> subprocess.CompletedProcess:
    cmd = [helm_path(), "template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, *args]
    if values is not None:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def parse(text: str) -> Rendered:
    return Rendered(text, [d for d in yaml.safe_load_all(text) if d])


def scenario_file(name: str) -> Path:
    return CHART_DIR / "ci" / f"{name}-values.yaml"


# Cluster APIs the scenarios are rendered against (as if the operators were installed).
SCENARIO_APIS = {
    "gke-pro": [
        "monitoring.coreos.com/v1/ServiceMonitor",
        "monitoring.coreos.com/v1/PrometheusRule",
        "keda.sh/v1alpha1",
    ],
    "gke-pro-multinode": [
        "monitoring.coreos.com/v1/ServiceMonitor",
        "monitoring.coreos.com/v1/PrometheusRule",
        "keda.sh/v1alpha1",
        "leaderworkerset.x-k8s.io/v1",
    ],
}


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    out = {}
    for name in SCENARIOS:
        apis = [a for api in SCENARIO_APIS.get(name, []) for a in ("--api-versions", api)]
        proc = helm_template("-f", str(scenario_file(name)), *apis)
        assert proc.returncode == 0, f"{name}: helm template failed:\n{proc.stderr}"
        out[name] = parse(proc.stdout)
    return out


@pytest.fixture(scope="session")
def rendered_dir(rendered: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every scenario's manifests (and the chart defaults') as <name>.yaml in one folder (one checkov run)."""
    folder = tmp_path_factory.mktemp("rendered")
    for name, r in rendered.items():
        (folder / f"{name}.yaml").write_text(r.text + lws_pods_for_checkov(r))
    defaults = helm_template()
    assert defaults.returncode == 0, defaults.stderr
    (folder / "defaults.yaml").write_text(defaults.stdout)
    return folder


def lws_pods_for_checkov(r: Rendered) -> str:
    """checkov does not know the LeaderWorkerSet kind and would pass it unchecked: its leader and worker pod
    templates, as the Pods LWS creates from them (the LWS's checkov skips carried over), get checked instead."""
    pods = []
    for doc in r.kind("LeaderWorkerSet"):
        for role in ("leader", "worker"):
            template = doc["spec"]["leaderWorkerTemplate"][f"{role}Template"]
            meta = {
                "name": f"{doc['metadata']['name']}-{role}",
                "namespace": doc["metadata"]["namespace"],
                "labels": template["metadata"]["labels"],
                "annotations": {**doc["metadata"].get("annotations", {}), **template["metadata"]["annotations"]},
            }
            pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
    return "".join("---\n" + yaml.safe_dump(pod) for pod in pods)


@pytest.fixture(scope="session", autouse=True)
def cached_schemas() -> Iterator[None]:
    """kubernetes-validate re-reads the (large, read-only) schema files for every object; read each once."""
    patch = pytest.MonkeyPatch()
    utils = kubernetes_validate.utils
    patch.setattr(utils, "schema_contents", functools.lru_cache(maxsize=None)(utils.schema_contents))
    yield
    patch.undo()


def helm_notes(values: dict[str, Any], tmp: Path) -> str:
    """NOTES.txt as `helm install` prints it (a client-side dry run: no cluster is contacted)."""
    path = tmp / "notes-values.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = subprocess.run(
        [
            helm_path(),
            "install",
            RELEASE,
            str(CHART_DIR),
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "KUBECONFIG": str(tmp / "no-kubeconfig")},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("NOTES:", 1)[1]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """The chart's download script (files/download_model.py) loaded as a module."""
    return load_script()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A loopback Hugging Face hub, with HF_ENDPOINT pointing at it."""
    fake = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield fake
    fake.server.shutdown()
