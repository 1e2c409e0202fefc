"""The seam to the chart: the values the program hands ``helm.v4.Chart``, rendered by real ``helm template``.

The values are taken from the Chart resource's inputs as the mock engine received them (so this is
what the Kubernetes provider would get: every number a double, as on the wire), rendered with the
project's helm binary and validated against the Kubernetes schemas in strict mode. The doubles go to
helm as they are: the provider writes them to a values file for helm, and helm reads every number
as a float64 anyway, so rendering them unconverted is what the cluster gets. Then the facts that must line up across layers:
GPU limits = the plan's tensor-parallel size, tolerations cover the pool's taint, the node
selector is what the GPU nodes carry, the storage class is the one the platform layer made.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from pulumi_harness import ProgramRun
from pulumi_stacks import STACKS, stack_run

from inference.router.config import load_router_config
from infra.app import component_name
from infra.chart_values import CHART_DIR
from infra.planner import plan_deployment
from infra.program import ROUTER_PORT
from tests.charts.conftest import helm_path, parse
from tests.charts.engine_seal import (
    assert_download_has_its_egress,
    assert_engine_sealed,
    engine_key_refs,
    engine_templates,
)
from tests.charts.test_chart_render import kubernetes_minors
from tests.support.manifests import validate_manifest

_RENDERED: dict[tuple[str, str], list[dict]] = {}


def helm_template(chart: dict, values: dict, values_file: Path) -> list[dict]:
    """helm template of charts/dsdeploy as helm.v4.Chart would run it (release name, namespace, values)."""
    assert Path(chart["chart"]) == CHART_DIR
    values_file.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [
            helm_path(),
            "template",
            chart["name"],
            str(CHART_DIR),
            "--namespace",
            chart["namespace"],
            "--values",
            str(values_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return parse(result.stdout).docs


def rendered(key: tuple[str, str], tmp_dir: Path) -> list[dict]:
    """helm template of the chart with the values the program handed helm.v4.Chart for this stack."""
    if key not in _RENDERED:
        chart = stack_run(*key).one("kubernetes:helm.sh/v4:Chart", "dsdeploy").inputs
        _RENDERED[key] = helm_template(chart, chart["values"], tmp_dir / f"{key[0]}-{key[1]}-values.yaml")
    return _RENDERED[key]


@pytest.fixture(params=sorted(STACKS), ids=lambda key: f"{key[0]}-{key[1]}")
def manifests(request, tmp_path_factory) -> tuple[tuple[str, str], ProgramRun, list[dict]]:
    key = request.param
    return key, stack_run(*key), rendered(key, tmp_path_factory.mktemp("values"))


def find(docs: list[dict], kind: str, name_suffix: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, [(d["kind"], d["metadata"]["name"]) for d in docs]
    return found[0]


@pytest.mark.parametrize("version", [kubernetes_minors()[0], kubernetes_minors()[-1]])
def test_rendered_manifests_validate_strictly(manifests, version):
    _, _, docs = manifests
    for doc in docs:
        validate_manifest(doc, version)
    assert len(docs) >= 10


def test_engine_gpu_limit_is_the_plans_tensor_parallel_size(manifests):
    (platform, tier), run, docs = manifests
    raw = STACKS[(platform, tier)][0]
    plan = plan_deployment(raw["model"], tier, quantization=raw.get("quantization"))
    engine = find(docs, "Deployment", "-engine")["spec"]["template"]["spec"]
    [container] = [c for c in engine["containers"] if c["resources"].get("limits", {}).get("nvidia.com/gpu")]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == plan.tensor_parallel_size
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == run.outputs["plan"]["tensorParallelSize"]
    args = " ".join(container.get("args", []) + container.get("command", []))
    assert f"--tensor-parallel-size={plan.tensor_parallel_size}" in args.replace(
        "--tensor-parallel-size ", "--tensor-parallel-size="
    )


def test_engine_numbers_reach_vllm_as_integers(manifests):
    """Every number crosses the engine as a double; the flags vLLM parses as int must still read as integers."""
    _, _, docs = manifests
    engine = find(docs, "Deployment", "-engine")["spec"]["template"]["spec"]
    args = [arg for c in engine["containers"] for arg in c.get("args", []) + c.get("command", [])]
    numeric = [
        arg for arg in args if arg.split("=")[0] in ("--tensor-parallel-size", "--max-model-len", "--max-num-seqs")
    ]
    assert len(numeric) >= 2, args
    for arg in numeric:
        assert re.fullmatch(r"--[a-z-]+=\d+", arg), arg


@pytest.mark.parametrize(
    "override",
    [
        {},
        {"nameOverride": "llm"},
        {"nameOverride": "deploy"},
        {"fullnameOverride": "team-a-deepseek-r1-distill-llama-70b-inference-p1"},
    ],
)
def test_router_name_the_outputs_use_is_the_charts(override, tmp_path):
    """routerEndpoint and routerPortForward name the Service by the chart's own naming rule."""
    chart = stack_run("existing", "pro").one("kubernetes:helm.sh/v4:Chart", "dsdeploy").inputs
    values = {**chart["values"], **override}
    service = find(helm_template(chart, values, tmp_path / "values.yaml"), "Service", "-router")
    assert service["metadata"]["name"] == component_name(values, "router")


def _tolerates(tolerations: list[dict], taint: dict) -> bool:
    for tol in tolerations:
        if tol.get("effect") not in (None, taint["effect"]):
            continue
        if tol.get("operator") == "Exists" and tol.get("key") in (None, taint["key"]):
            return True
        if tol.get("key") == taint["key"] and tol.get("value") == taint.get("value"):
            return True
    return False


def test_engine_lands_on_the_gpu_nodes(manifests):
    (platform, _), run, docs = manifests
    engine = find(docs, "Deployment", "-engine")["spec"]["template"]["spec"]
    facts = run.outputs["gpuNodes"]
    for taint in facts["taints"]:
        assert _tolerates(engine.get("tolerations", []), taint), (taint, engine.get("tolerations"))
    assert engine["nodeSelector"] == facts["labels"]
    if platform == "gke":
        pool = run.one("gcp:container/nodePool:NodePool", "gke-gpu").inputs["nodeConfig"]
        # The pool's own labels plus GKE's accelerator label are on every GPU node.
        on_node = {**pool["labels"], "cloud.google.com/gke-accelerator": pool["guestAccelerators"][0]["type"]}
        assert engine["nodeSelector"].items() <= on_node.items()
    if platform == "eks":
        group = run.one("aws:eks/nodeGroup:NodeGroup", "eks-gpu").inputs
        on_node = {**group["labels"], "node.kubernetes.io/instance-type": group["instanceTypes"][0]}
        assert engine["nodeSelector"].items() <= on_node.items()


def test_model_cache_uses_the_platform_storage_class(manifests):
    (platform, tier), run, docs = manifests
    claim = find(docs, "PersistentVolumeClaim", "-model-cache")
    expected = STACKS[(platform, tier)][0].get("storageClass")
    if platform in ("gke", "eks"):
        expected = run.one("kubernetes:storage.k8s.io/v1:StorageClass").inputs["metadata"]["name"]
    assert claim["spec"].get("storageClassName") == expected
    if claim["spec"]["accessModes"] == ["ReadWriteMany"] and platform != "existing":
        provisioner = run.one("kubernetes:storage.k8s.io/v1:StorageClass").inputs["provisioner"]
        assert provisioner in ("filestore.csi.storage.gke.io", "efs.csi.aws.com")


def test_router_service_matches_the_endpoint_output(manifests):
    _, run, docs = manifests
    service = find(docs, "Service", "-router")
    host = f"{service['metadata']['name']}.{run.one('kubernetes:helm.sh/v4:Chart', 'dsdeploy').inputs['namespace']}"
    assert run.outputs["routerEndpoint"] == f"http://{host}.svc.cluster.local:{ROUTER_PORT}"
    assert [p["port"] for p in service["spec"]["ports"]] == [ROUTER_PORT]


def test_cloud_fallback_reads_the_key_from_the_programs_secret(manifests, tmp_path):
    (platform, tier), run, docs = manifests
    router = find(docs, "Deployment", "-router")["spec"]["template"]["spec"]
    refs = [
        env["valueFrom"]["secretKeyRef"]
        for container in router["containers"]
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    ]
    config_file = tmp_path / "router.yaml"
    config_file.write_text(find(docs, "ConfigMap", "-router")["data"]["router.yaml"])
    config = load_router_config(
        config_file, environ={"DEEPSEEK_API_KEY": "test-key-not-real", "DSDEPLOY_ENGINE_KEY": "e"}
    )
    if STACKS[(platform, tier)][1].get("deepseekApiKey"):
        secret = run.one("kubernetes:core/v1:Secret", "deepseek").inputs
        assert {"name": secret["metadata"]["name"], "key": "api-key"} in [
            {"name": ref["name"], "key": ref["key"]} for ref in refs
        ]
        assert config.cloud is not None and config.cloud.api_key == "test-key-not-real"
    else:
        assert not [ref for ref in refs if ref["name"] == "dsdeploy-deepseek"]
        assert config.cloud is None


def test_the_engine_is_sealed_off(manifests):
    """The stack's engine reaches nothing but DNS (and its group); the download Job, its own pod, has the egress
    and whatever identity the download needs; the engine key is the program's Secret, held by router and engine."""
    (platform, tier), run, docs = manifests
    values = run.one("kubernetes:helm.sh/v4:Chart", "dsdeploy").inputs["values"]
    dns = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["networkPolicy"]["dnsTo"]
    assert_engine_sealed(docs, values.get("networkPolicy", {}).get("dnsTo", dns))
    if values["model"]["source"] != "none" and not values["modelCache"].get("airgapped"):
        assert_download_has_its_egress(docs)
    secret = run.one("kubernetes:core/v1:Secret", "engine-api-key").inputs["metadata"]["name"]
    refs = engine_key_refs(docs)
    api = "engine/leader" if any(role == "leader" for role, _ in engine_templates(docs)) else "engine"
    assert refs == {api: (secret, "api-key"), "router": (secret, "api-key")}
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart makes no key of its own under Pulumi"
