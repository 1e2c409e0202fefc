"""Assertions on the rendered objects of every scenario: GPUs, placement, shm, secrets, pod security, policies."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from inference.engines import READY_PATHS
from inference.router.config import load_router_config
from infra.vllm_release import pinned_vllm_tag
from tests.charts.conftest import NAMESPACE, SCENARIOS, Rendered, helm_template, parse, scenario_file

GPU_SCENARIOS = ("gke-base", "gke-pro", "eks-pro", "airgapped")


def values_of(scenario: str) -> dict:
    return yaml.safe_load(scenario_file(scenario).read_text())


def engine_container(r: Rendered) -> dict:
    return r.engine_pod_spec()["containers"][0]


def arg(container: dict, flag: str) -> str | None:
    for a in container.get("args", []):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


@pytest.mark.parametrize("scenario", GPU_SCENARIOS)
def test_gpu_limit_equals_tensor_parallel_size(rendered: dict[str, Rendered], scenario: str) -> None:
    tp = values_of(scenario)["engine"]["tensorParallelSize"]
    c = engine_container(rendered[scenario])
    assert c["resources"]["limits"]["nvidia.com/gpu"] == tp
    assert c["resources"]["requests"]["nvidia.com/gpu"] == tp
    assert arg(c, "--tensor-parallel-size") == str(tp)
    assert c["command"] == ["vllm", "serve"]
    assert re.match(r"^vllm/vllm-openai:v\d+\.\d+\.\d+$|^registry\.site\.local/", c["image"]), c["image"]


@pytest.mark.parametrize("scenario", GPU_SCENARIOS)
def test_gpu_pods_select_and_tolerate_the_gpu_pool(rendered: dict[str, Rendered], scenario: str) -> None:
    spec = rendered[scenario].engine_pod_spec()
    expected = values_of(scenario)["engine"]["gpu"]["nodeSelector"]
    assert expected and spec["nodeSelector"] == expected
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_platform_labels(rendered: dict[str, Rendered]) -> None:
    sel = {s: rendered[s].engine_pod_spec()["nodeSelector"] for s in GPU_SCENARIOS}
    assert sel["gke-base"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert sel["gke-pro"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert "node.kubernetes.io/instance-type" in sel["eks-pro"]
    assert sel["airgapped"] == {"site.example/gpu": "a100-40gb"}


@pytest.mark.parametrize("scenario", ["onprem-cpu", "edge-server"])
def test_cpu_nodes_have_no_gpu_placement(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    spec = r.engine_pod_spec()
    assert "nodeSelector" not in spec and "tolerations" not in spec
    c = spec["containers"][0]
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and "nvidia.com/gpu" not in c["resources"]["requests"]
    assert "nvidia.com/gpu" not in r.text


def test_cpu_engine_is_vllms_cpu_image_at_the_charts_vllm_release(rendered: dict[str, Rendered]) -> None:
    c = engine_container(rendered["onprem-cpu"])
    assert c["image"] == f"registry.internal.example/vllm/vllm-openai-cpu:{pinned_vllm_tag()}"
    assert c["command"] == ["vllm", "serve"]
    # The KV cache is sized by the values, never from the node's free memory; no GPU flag on CPU.
    assert arg(c, "--kv-cache-memory-bytes") == "2G"
    assert not any(a.startswith("--gpu-memory-utilization") for a in c["args"])
    assert arg(c, "--reasoning-parser") == "deepseek_r1"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"


def test_cpu_image_tag_follows_the_gpu_image_unless_set(tmp_path: Path) -> None:
    for cpu_tag, expected in (
        ("", f"vllm/vllm-openai-cpu:{pinned_vllm_tag()}"),
        ("v9.9.9-x86_64", "vllm/vllm-openai-cpu:v9.9.9-x86_64"),
    ):
        proc = helm_template(
            values={"engine": {"gpusPerReplica": 0, "vllm": {"cpuImage": {"tag": cpu_tag}}}}, tmp=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        assert engine_container(parse(proc.stdout))["image"] == expected
    digest_only = {"engine": {"gpusPerReplica": 0, "vllm": {"image": {"tag": "", "digest": "sha256:" + "c" * 64}}}}
    proc = helm_template(values=digest_only, tmp=tmp_path)
    assert proc.returncode != 0 and "engine.vllm.cpuImage: set a tag or a digest" in proc.stderr


def test_edge_engine_is_the_server_on_the_gguf_file_as_shipped(rendered: dict[str, Rendered]) -> None:
    c = engine_container(rendered["edge-server"])
    assert c["command"] == ["dsdeploy", "serve"]
    assert arg(c, "--device") == "cpu"
    assert arg(c, "--gguf-file") == "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_shm_is_memory_backed_and_sized(rendered: dict[str, Rendered], scenario: str) -> None:
    v = values_of(scenario)["engine"]
    spec = rendered[scenario].engine_pod_spec()
    shm = next(vol for vol in spec["volumes"] if vol["name"] == "shm")
    expected = v.get("shm", {}).get("sizeLimit") or f"{max(2, 4 * v['tensorParallelSize'])}Gi"
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": expected}
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/dev/shm"] == "shm"
    if v["tensorParallelSize"] > 1:  # NCCL between ranks needs more than the 64 MiB default
        assert int(expected.removesuffix("Gi")) >= 4 * v["tensorParallelSize"]


def test_default_shm_follows_tensor_parallel_size(tmp_path: Path) -> None:
    proc = helm_template(values={"engine": {"gpusPerReplica": 8, "tensorParallelSize": 8}}, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    spec = parse(proc.stdout).engine_pod_spec()
    shm = next(vol for vol in spec["volumes"] if vol["name"] == "shm")
    assert shm["emptyDir"]["sizeLimit"] == "32Gi"


def test_integer_flags_render_as_integers_however_large(tmp_path: Path) -> None:
    """Helm reads numbers as float64 and prints 1048576 as 1.048576e+06 unless the template says int."""
    for engine_type in ("vllm", "server"):
        proc = helm_template(values={"engine": {"type": engine_type, "maxModelLen": 1048576}}, tmp=tmp_path)
        assert proc.returncode == 0, proc.stderr
        c = engine_container(parse(proc.stdout))
        assert arg(c, "--max-model-len") == "1048576", c["args"]


def test_server_engine_drains_within_the_pods_grace_period(tmp_path: Path) -> None:
    for grace, drain in ((60, "50"), (120, "110"), (5, "1")):
        proc = helm_template(
            values={"engine": {"type": "server", "terminationGracePeriodSeconds": grace}}, tmp=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        r = parse(proc.stdout)
        assert r.engine_pod_spec()["terminationGracePeriodSeconds"] == grace
        assert arg(engine_container(r), "--drain-grace") == drain


def test_engine_args_follow_values(rendered: dict[str, Rendered]) -> None:
    c = engine_container(rendered["gke-pro"])
    v = values_of("gke-pro")["engine"]
    assert arg(c, "--quantization") == "fp8"
    assert arg(c, "--reasoning-parser") == "deepseek_r1"
    assert arg(c, "--max-model-len") == str(v["maxModelLen"])
    assert arg(c, "--gpu-memory-utilization") == str(v["gpuMemoryUtilization"])
    assert arg(c, "--max-num-seqs") == str(v["maxNumSeqs"])
    assert arg(c, "--served-model-name") == "deepseek-r1-distill-llama-70b"
    assert c["args"][0] == "/models/deepseek-r1-distill-llama-70b"
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in c["env"]
    for probe, path in (("startupProbe", "/health"), ("readinessProbe", "/health"), ("livenessProbe", "/health")):
        assert c[probe]["httpGet"]["path"] == path
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


SECRET_LIKE = re.compile(r"sk-[A-Za-z0-9]{16,}|hf_[A-Za-z0-9]{16,}|AKIA[A-Z0-9]{16}")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_secret_values_in_output(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    # The only Secret the chart makes is the engine's key (random, test_chart_engine_seal.py); every other is the user's.
    assert [d["metadata"]["name"] for d in r.kind("Secret")] == ["ds-dsdeploy-engine-key"]
    assert not SECRET_LIKE.search(r.text)
    for _, spec in r.pod_specs():
        for c in spec["containers"] + spec.get("initContainers", []):
            for env in c.get("env", []):
                if re.search(r"KEY|TOKEN|SECRET|PASSWORD", env["name"]) and env["name"] != "DSDEPLOY_TOKEN_FILE":
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_is_restricted(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    accounts = {d["metadata"]["name"]: d for d in r.kind("ServiceAccount")}
    specs = r.pod_specs()
    assert len(specs) >= 3
    for name, spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        assert accounts[spec["serviceAccountName"]]["automountServiceAccountToken"] is False, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        assert all("hostPath" not in v for v in spec.get("volumes", [])), name
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True, (name, c["name"])
            assert sc["runAsUser"] >= 10000 and sc.get("privileged") is False, (name, c["name"])
            assert set(c["resources"]["limits"]) >= {"cpu", "memory"}, (name, c["name"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_router_config_loads_with_the_routers_loader(
    rendered: dict[str, Rendered], scenario: str, tmp_path: Path
) -> None:
    r = rendered[scenario]
    text = r.one("ConfigMap", "router")["data"]["router.yaml"]
    path = tmp_path / "router.yaml"
    path.write_text(text)
    cfg = load_router_config(path, environ={"DEEPSEEK_API_KEY": "test-key-not-real", "DSDEPLOY_ENGINE_KEY": "e"})
    assert cfg.upstreams[0].url == f"http://ds-dsdeploy-engine.{NAMESPACE}.svc:8000"
    assert cfg.server.host == "0.0.0.0"
    v = values_of(scenario).get("router", {})
    cloud = v.get("cloud", {}).get("enabled", False)
    assert (cfg.cloud is not None) == cloud
    container = r.one("Deployment", "router")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    if cloud:
        assert "${DEEPSEEK_API_KEY}" in text and cfg.cloud.api_key == "test-key-not-real"
        ref = env["DEEPSEEK_API_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": v["cloud"]["apiKeySecret"]["name"], "key": "api-key"}
    else:
        assert set(env) == {"DSDEPLOY_ENGINE_KEY"}
    # The router refuses a non-loopback bind without auth unless the chart said so explicitly.
    cfg.check_bind("0.0.0.0")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_router_probes_the_path_that_turns_503_when_the_engine_drains(
    rendered: dict[str, Rendered], scenario: str
) -> None:
    """The router's health probe and the pod's readiness probe read the same path, the one a draining engine
    fails: for our server /ready (its /health stays 200 until it exits, so a SIGTERMed pod kept new requests)."""
    r = rendered[scenario]
    engine_type = values_of(scenario).get("engine", {}).get("type", "vllm")
    cfg = yaml.safe_load(r.one("ConfigMap", "router")["data"]["router.yaml"])
    assert cfg["health"]["path"] == READY_PATHS[engine_type]
    assert engine_container(r)["readinessProbe"]["httpGet"]["path"] == READY_PATHS[engine_type]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_router_sees_each_engine_pod_through_a_headless_service(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    assert r.one("Service", "engine")["spec"]["clusterIP"] == "None"
    cfg = yaml.safe_load(r.one("ConfigMap", "router")["data"]["router.yaml"])
    assert cfg["upstreams"][0]["discover"] is True


def test_engine_service_can_be_a_single_cluster_ip(tmp_path: Path) -> None:
    proc = helm_template(values={"engine": {"service": {"headless": False}}}, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = parse(proc.stdout)
    assert "clusterIP" not in r.one("Service", "engine")["spec"]
    assert yaml.safe_load(r.one("ConfigMap", "router")["data"]["router.yaml"])["upstreams"][0]["discover"] is False


def test_router_extra_config_is_merged(rendered: dict[str, Rendered]) -> None:
    text = rendered["eks-pro"].one("ConfigMap", "router")["data"]["router.yaml"]
    cfg = yaml.safe_load(text)
    assert cfg["timeouts"] == {"first_byte_s": 30.0} and cfg["saturation"] == {"max_waiting": 16}
    assert cfg["policy"]["cloud_allowed"] == ["public", "internal"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_router_is_redundant(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    hpa = r.one("HorizontalPodAutoscaler", "router")
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert r.one("PodDisruptionBudget", "router")["spec"]["minAvailable"] == 1
    assert r.one("PodDisruptionBudget", "engine")["spec"]["maxUnavailable"] == 1


def test_router_replicas_without_hpa(tmp_path: Path) -> None:
    proc = helm_template(values={"router": {"autoscaling": {"enabled": False}}}, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = parse(proc.stdout)
    assert r.one("Deployment", "router")["spec"]["replicas"] == 2
    assert not r.kind("HorizontalPodAutoscaler")


def policy(r: Rendered, component: str) -> dict:
    return r.one("NetworkPolicy", component)["spec"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_network_policies(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    deny = r.one("NetworkPolicy", "network")["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    engine = policy(r, "engine")
    assert engine["egress"] == []  # the whole seal (group peers, DNS, no download) is test_chart_engine_seal.py
    sources = engine["ingress"][0]["from"]
    assert sources[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "router"
    assert all(
        "podSelector" not in s or s["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "router"
        for s in sources
    )
    router = policy(r, "router")
    ports = [p["port"] for rule in router["egress"] for p in rule["ports"]]
    cloud = values_of(scenario).get("router", {}).get("cloud", {}).get("enabled", False)
    assert sorted(ports) == sorted([53, 53, 8000] + ([443] if cloud else []))
    if r.kind("Job"):
        download = policy(r, "model-download")
        assert download["ingress"] == []
        assert sorted(p["port"] for rule in download["egress"] for p in rule["ports"]) == [53, 53, 443]
    covered = {json.dumps(d["spec"]["podSelector"], sort_keys=True) for d in r.kind("NetworkPolicy")}
    assert len(covered) == len(r.kind("NetworkPolicy"))


def test_download_job(rendered: dict[str, Rendered]) -> None:
    job = rendered["gke-pro"].kind("Job")[0]  # a ReadWriteMany cache: a Job downloads, the engine waits
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 1
    c = spec["template"]["spec"]["containers"][0]
    assert "--source=hf" in c["args"] and "--model-id=deepseek-ai/DeepSeek-R1-Distill-Llama-70B" in c["args"]
    assert any(a.startswith("--attempts=") for a in c["args"])
    token = next(v for v in spec["template"]["spec"]["volumes"] if v["name"] == "token")
    assert token["secret"]["secretName"] == "hf-token"  # token from a file, not an env var
    eks = rendered["eks-pro"].kind("Job")[0]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "HF_ENDPOINT", "value": "https://hf-mirror.com"} in eks["env"]
    # ReadWriteOnce (local-path): a Job on the engine's node downloads, with the download image
    cpu = rendered["onprem-cpu"].download_container()
    assert "--source=modelscope" in cpu["args"]
    assert cpu["image"] == "registry.internal.example/dsdeploy/model-fetch:1.0"
    assert rendered["onprem-cpu"].engine_pod_spec()["initContainers"][0]["name"] == "wait-for-model"
    # The engine waits for the download's marker of this very model before it starts.
    init = rendered["gke-pro"].engine_pod_spec()["initContainers"][0]
    assert any(a.startswith("--wait=") for a in init["args"])
    assert "--model-id=deepseek-ai/DeepSeek-R1-Distill-Llama-70B" in init["args"] and "--revision=main" in init["args"]


def test_model_cache_survives_uninstall_prune_and_remediation(rendered: dict[str, Rendered]) -> None:
    pvc = rendered["gke-base"].one("PersistentVolumeClaim", "model-cache")
    annotations = pvc["metadata"]["annotations"]
    assert annotations["helm.sh/resource-policy"] == "keep"
    assert {o.strip() for o in annotations["argocd.argoproj.io/sync-options"].split(",")} == {
        "Delete=false",
        "Prune=false",
    }


def test_airgapped_skips_download(rendered: dict[str, Rendered]) -> None:
    r = rendered["airgapped"]
    assert not r.kind("Job") and not r.kind("PersistentVolumeClaim")
    spec = r.engine_pod_spec()
    assert spec["initContainers"][0]["args"] == ["--dest=/models/DeepSeek-R1-Distill-Qwen-14B", "--check-only"]
    claim = next(v for v in spec["volumes"] if v["name"] == "model-cache")["persistentVolumeClaim"]
    assert claim["claimName"] == "deepseek-weights"
    assert not [p for p in r.kind("NetworkPolicy") if "443" in json.dumps(p)], "no egress outside on an offline site"


def test_download_job_name_changes_with_the_model(tmp_path: Path) -> None:
    names = set()
    for model in ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"):
        proc = helm_template(
            values={"model": {"id": model}, "modelCache": {"accessMode": "ReadWriteMany"}}, tmp=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        names.add(parse(proc.stdout).kind("Job")[0]["metadata"]["name"])
    assert len(names) == 2  # Jobs are immutable: a new model must not collide with the old Job


def test_engine_autoscaling_keda_or_hpa(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    so = rendered["gke-pro"].one("ScaledObject", "engine")
    trigger = so["spec"]["triggers"][0]
    # An External AverageValue metric: KEDA's HPA divides the value by the pod count, so the query must sum.
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["query"] == (
        'sum(vllm:num_requests_waiting{namespace="dsdeploy",model_name="deepseek-r1-distill-llama-70b"})'
    )
    assert trigger["metadata"]["threshold"] == "5"
    assert "replicas" not in rendered["gke-pro"].one("Deployment", "engine")["spec"]
    assert not [
        h
        for h in rendered["gke-pro"].kind("HorizontalPodAutoscaler")
        if h["metadata"]["labels"]["app.kubernetes.io/component"] == "engine"
    ]
    hpa = rendered["eks-pro"].one("HorizontalPodAutoscaler", "engine")
    assert hpa["spec"]["metrics"][0]["pods"] == {
        "metric": {"name": "vllm_num_requests_waiting"},
        "target": {"type": "AverageValue", "averageValue": "5"},
    }
    external = parse(
        helm_template(
            values={
                "engine": {
                    "autoscaling": {"enabled": True, "provider": "hpa", "hpaMetricType": "External", "maxReplicas": 4}
                }
            },
            tmp=tmp_path,
        ).stdout
    )
    metric = external.one("HorizontalPodAutoscaler", "engine")["spec"]["metrics"][0]
    assert metric["type"] == "External" and metric["external"]["metric"] == {
        "name": "vllm_num_requests_waiting",
        "selector": {"matchLabels": {"model_name": "deepseek-r1-distill-qwen-7b"}},
    }
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "5"}
    # provider auto: KEDA when the API exists, HPA otherwise
    values = {"engine": {"autoscaling": {"enabled": True, "provider": "auto"}}}
    with_keda = parse(helm_template("--api-versions", "keda.sh/v1alpha1", values=values, tmp=tmp_path).stdout)
    without = parse(helm_template(values=values, tmp=tmp_path).stdout)
    assert with_keda.kind("ScaledObject") and not without.kind("ScaledObject")
    assert without.one("HorizontalPodAutoscaler", "engine")
    off = parse(helm_template("--api-versions", "keda.sh/v1alpha1", tmp=tmp_path).stdout)
    assert not off.kind("ScaledObject"), "autoscaling is off by default"


def test_engine_scale_to_zero_wakes_on_the_routers_waiting_requests(tmp_path: Path) -> None:
    from tests.support.crd_schemas import validate_custom_resource

    keda = ("--api-versions", "keda.sh/v1alpha1")
    on = {"engine": {"autoscaling": {"enabled": True, "provider": "keda", "scaleToZero": {"enabled": True}}}}
    proc = helm_template(*keda, values=on, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    so = parse(proc.stdout).one("ScaledObject", "engine")
    validate_custom_resource(so)  # against KEDA's own CRD (tests/support/crds)
    assert so["spec"]["minReplicaCount"] == 0
    queue_depth, waiting, _running, _cold_cloud = so["spec"]["triggers"]  # the last two: the test below
    assert queue_depth["metadata"]["query"].startswith("sum(vllm:num_requests_waiting{")
    assert waiting["type"] == "prometheus" and waiting["metricType"] == "AverageValue"
    assert waiting["metadata"]["query"] == f'sum(dsdeploy_router_waiting_requests{{namespace="{NAMESPACE}"}})'
    assert (waiting["metadata"]["threshold"], waiting["metadata"]["activationThreshold"]) == ("1", "0")
    # the router exports that gauge under that name
    from inference.router.config import parse_router_config
    from inference.router.metrics import RouterMetrics
    from inference.router.pool import UpstreamPool

    pool = UpstreamPool(parse_router_config({"upstreams": [{"url": "http://127.0.0.1:1"}]}))
    assert b"\ndsdeploy_router_waiting_requests 0.0\n" in RouterMetrics(True, pool, None).render()
    off = parse(
        helm_template(
            *keda, values={"engine": {"autoscaling": {"enabled": True, "provider": "keda"}}}, tmp=tmp_path
        ).stdout
    ).one("ScaledObject", "engine")
    assert off["spec"]["minReplicaCount"] == 1 and len(off["spec"]["triggers"]) == 1  # off by default
    hpa = helm_template(
        values={"engine": {"autoscaling": {"enabled": True, "provider": "hpa", "scaleToZero": {"enabled": True}}}},
        tmp=tmp_path,
    )
    assert hpa.returncode != 0 and "an HPA cannot scale to zero" in hpa.stderr
    bad = helm_template(
        *keda, values={"engine": {"autoscaling": {"scaleToZero": {"waitingMetricName": "a b"}}}}, tmp=tmp_path
    )
    assert bad.returncode != 0 and "waitingMetricName" in bad.stderr


def test_scale_to_zero_keeps_a_serving_engine_up_and_wakes_on_cloud_demand(tmp_path: Path) -> None:
    """The ScaledObject's queries, run by promtool on series as the engine and the router export them: an
    engine serving without a queue stays active (KEDA scales to zero only when every trigger is inactive),
    and requests that went to the cloud for want of an engine wake one."""
    from inference.router.config import parse_router_config
    from inference.router.metrics import RouterMetrics
    from inference.router.pool import UpstreamPool
    from tests.support.crd_schemas import validate_custom_resource
    from tests.support.promtool import run_rule_tests

    keda = ("--api-versions", "keda.sh/v1alpha1")
    zero = {"enabled": True, "provider": "keda", "scaleToZero": {"enabled": True}}
    proc = helm_template(*keda, values={"engine": {"autoscaling": zero, "maxNumSeqs": 64}}, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    so = parse(proc.stdout).one("ScaledObject", "engine")
    validate_custom_resource(so)
    _, _, running, cold_cloud = so["spec"]["triggers"]
    assert running["metadata"]["threshold"] == "64"  # a pod's capacity: it never asks for more pods
    assert (running["metadata"]["activationThreshold"], cold_cloud["metadata"]["activationThreshold"]) == ("0", "0")
    ns, model = NAMESPACE, "deepseek-r1-distill-qwen-7b"
    series = [  # one engine serving 3 requests, no queue; a router that sent 8 to the cloud while it was cold
        {"series": f'vllm:num_requests_running{{namespace="{ns}",model_name="{model}",pod="e"}}', "values": "3x6"},
        {"series": f'vllm:num_requests_waiting{{namespace="{ns}",model_name="{model}",pod="e"}}', "values": "0x6"},
        {"series": f'dsdeploy_router_waiting_requests{{namespace="{ns}",pod="r"}}', "values": "0x6"},
        {"series": f'dsdeploy_router_cold_cloud_requests_total{{namespace="{ns}",pod="r"}}', "values": "0 4 8 8 8 8 8"},
    ]
    checks = [
        {"expr": running["metadata"]["query"], "eval_time": "6m", "exp_samples": [{"labels": "{}", "value": 3}]},
        {"expr": cold_cloud["metadata"]["query"], "eval_time": "2m", "exp_samples": [{"labels": "{}", "value": 1}]},
        {"expr": cold_cloud["metadata"]["query"], "eval_time": "6m", "exp_samples": [{"labels": "{}", "value": 0}]},
    ]
    result = run_rule_tests([], [{"interval": "1m", "input_series": series, "promql_expr_test": checks}], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # the router exports the counter under that name; without a maxNumSeqs the target is vLLM's largest default
    pool = UpstreamPool(parse_router_config({"upstreams": [{"url": "http://127.0.0.1:1"}]}))
    assert b"\ndsdeploy_router_cold_cloud_requests_total 0.0\n" in RouterMetrics(True, pool, None).render()
    plain = helm_template(*keda, values={"engine": {"autoscaling": zero}}, tmp=tmp_path)
    assert parse(plain.stdout).one("ScaledObject", "engine")["spec"]["triggers"][2]["metadata"]["threshold"] == "2048"
    stay = {**zero, "scaleToZero": {"enabled": True, "wakeOnCloudRequests": False}}
    off = parse(helm_template(*keda, values={"engine": {"autoscaling": stay}}, tmp=tmp_path).stdout)
    assert len(off.one("ScaledObject", "engine")["spec"]["triggers"]) == 3


def test_a_vllm_engine_finishes_its_open_requests_on_sigterm(rendered: dict[str, Rendered]) -> None:
    """vLLM aborts open requests on SIGTERM unless --shutdown-timeout > 0: a rollout would cut them."""
    pod = rendered["gke-pro"].one("Deployment", "engine")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    assert "--shutdown-timeout=50" in pod["containers"][0]["args"]


def test_monitoring_follows_the_cluster_api(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    assert not rendered["gke-base"].kind("ServiceMonitor") and not rendered["gke-base"].kind("PrometheusRule")
    r = parse(
        helm_template(
            "--api-versions",
            "monitoring.coreos.com/v1/ServiceMonitor",
            "--api-versions",
            "monitoring.coreos.com/v1/PrometheusRule",
        ).stdout
    )
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in r.kind("ServiceMonitor")} == {
        "engine",
        "router",
    }
    rules = rendered["gke-pro"].kind("PrometheusRule")[0]["spec"]["groups"][0]["rules"]
    assert {x["alert"] for x in rules} == {
        "DsdeployEngineNotReady",
        "DsdeployFallbackRateHigh",
        "DsdeployQueueSaturated",
        "DsdeployGpuMemoryHigh",
        "DsdeployRouterMetricsAbsent",
        "DsdeployEngineMetricsAbsent",
        "DsdeployKubeStateMetricsAbsent",
        "DsdeployGpuMetricsAbsent",
        "DsdeployCloudBudgetExhausted",
        "DsdeployRouterSharedStateDown",
    }
    assert rendered["gke-pro"].kind("PrometheusRule")[0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # (what the alerts match is run in promtool by test_chart_alerts.py)
    dash = rendered["gke-base"].one("ConfigMap", "monitoring")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(next(iter(dash["data"].values())))
    assert board["panels"] and any("vllm:num_requests_waiting" in json.dumps(p) for p in board["panels"])


def test_helm_test_hook(rendered: dict[str, Rendered]) -> None:
    pod = rendered["gke-base"].kind("Pod")[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["dsdeploy", "smoke"]
    assert f"--url=http://ds-dsdeploy-router.{NAMESPACE}.svc:8080" in c["args"]
    keyed = rendered["gke-pro"].kind("Pod")[0]["spec"]["containers"][0]
    assert keyed["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "dsdeploy-client-key"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_everything_is_namespaced_and_labelled(rendered: dict[str, Rendered], scenario: str) -> None:
    for d in rendered[scenario].docs:
        assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]["name"]
        assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == "ds"
        assert len(d["metadata"]["name"]) <= 63


def test_router_service_for_load_balancers(tmp_path: Path) -> None:
    from tests.charts.conftest import helm_notes

    annotations = {
        "cloud.google.com/neg": '{"ingress": true}',
        "service.beta.kubernetes.io/aws-load-balancer-type": "external",
    }
    lb = {
        "router": {
            "service": {
                "type": "LoadBalancer",
                "annotations": annotations,
                "loadBalancerSourceRanges": ["203.0.113.0/24"],
                "externalTrafficPolicy": "Local",
            }
        }
    }
    proc = helm_template(values=lb, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = parse(proc.stdout)
    svc = r.one("Service", "router")
    assert svc["metadata"]["annotations"] == annotations
    assert svc["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    # the NetworkPolicy follows: the clients the load balancer lets in reach the router pods
    assert {"ipBlock": {"cidr": "203.0.113.0/24"}} in policy(r, "router")["ingress"][0]["from"]
    assert "WARNING: router.service.type" not in helm_notes(lb, tmp_path)
    # a LoadBalancer with the default ingress policy drops external clients: NOTES says so
    notes = helm_notes({"router": {"service": {"type": "LoadBalancer"}}}, tmp_path)
    assert "WARNING: router.service.type is LoadBalancer" in notes and "external clients are dropped" in notes
    assert "WARNING: router.service.type" not in helm_notes({}, tmp_path)
    default = parse(helm_template(tmp=tmp_path).stdout).one("Service", "router")
    assert "annotations" not in default["metadata"] and "externalTrafficPolicy" not in default["spec"]
