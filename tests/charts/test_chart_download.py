"""Who downloads the weights and where it runs: nothing may wait forever on a ReadWriteOnce volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.charts.conftest import Rendered, helm_template, parse

GPU_SELECTOR = {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def render(tmp_path: Path, values: dict[str, Any], *args: str) -> Rendered:
    proc = helm_template(*args, values=values, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return parse(proc.stdout)


def engine_pod(r: Rendered) -> dict[str, Any]:
    return r.engine_template()


def components(r: Rendered, kind: str) -> set[str]:
    return {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in r.kind(kind)}


def test_read_write_once_cache_downloads_in_the_engine_pod(tmp_path: Path) -> None:
    """The default (and gke-base, the GitOps examples): one pod attaches the disk, so no Multi-Attach wait."""
    r = render(tmp_path, {"engine": {"gpu": {"nodeSelector": GPU_SELECTOR}},
                          "model": {"tokenSecret": {"name": "hf-token"}}})
    assert not r.kind("Job")
    assert "model-download" not in components(r, "ServiceAccount") | components(r, "NetworkPolicy")
    spec = engine_pod(r)["spec"]
    [init] = spec["initContainers"]
    assert init["name"] == "download-model"
    assert "--source=hf" in init["args"] and "--model-id=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" in init["args"]
    assert {"name": "model-cache", "mountPath": "/models"} in init["volumeMounts"]  # writable here only
    engine = spec["containers"][0]
    assert {"name": "model-cache", "mountPath": "/models", "readOnly": True} in engine["volumeMounts"]
    assert not [m for m in engine["volumeMounts"] if m["name"] == "token"], "the token stays in the init container"
    assert [m for m in init["volumeMounts"] if m["name"] == "token"]
    claim = next(v for v in spec["volumes"] if v["name"] == "model-cache")["persistentVolumeClaim"]
    assert "readOnly" not in claim
    # it is the GPU pod itself, so it lands where the engine runs: no placement of its own to get wrong
    assert spec["nodeSelector"] == GPU_SELECTOR and GPU_TOLERATION in spec["tolerations"]
    egress = r.one("NetworkPolicy", "engine")["spec"]["egress"]
    assert sorted(p["port"] for rule in egress for p in rule["ports"]) == [53, 53, 443]


def test_read_write_many_cache_uses_a_job_and_the_engine_waits_for_its_marker(tmp_path: Path) -> None:
    r = render(tmp_path, {"modelCache": {"accessMode": "ReadWriteMany"},
                          "model": {"revision": "abc123", "allowPatterns": ["*.json", "*.safetensors"]}})
    job = r.one("Job", "model-download")["spec"]["template"]["spec"]
    assert "nodeSelector" not in job and "affinity" not in job, "a shared volume: any node, no GPU needed"
    [init] = engine_pod(r)["spec"]["initContainers"]
    assert init["name"] == "wait-for-model" and any(a.startswith("--wait=") for a in init["args"])
    identity = [a for a in job["containers"][0]["args"]
                if a.split("=")[0] in ("--source", "--model-id", "--revision", "--allow-pattern")]
    assert identity == [a for a in init["args"] if a.split("=")[0] in
                        ("--source", "--model-id", "--revision", "--allow-pattern")]
    assert "--revision=abc123" in identity and "--allow-pattern=*.safetensors" in identity
    assert r.one("NetworkPolicy", "engine")["spec"]["egress"] == []
    assert "model-download" in components(r, "NetworkPolicy") and "model-download" in components(r, "ServiceAccount")


def test_job_on_read_write_once_runs_on_the_engines_node(tmp_path: Path) -> None:
    r = render(tmp_path, {"modelCache": {"download": {"mode": "job", "nodeSelector": {"pool": "gpu"}}},
                          "engine": {"gpu": {"nodeSelector": GPU_SELECTOR},
                                     "tolerations": [{"key": "dedicated", "operator": "Exists"}]}})
    job = r.one("Job", "model-download")["spec"]["template"]["spec"]
    assert job["nodeSelector"] == {"pool": "gpu", **GPU_SELECTOR}
    assert GPU_TOLERATION in job["tolerations"] and {"key": "dedicated", "operator": "Exists"} in job["tolerations"]
    [term] = job["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    labels = term["labelSelector"]["matchLabels"]
    assert labels["app.kubernetes.io/component"] == "engine"
    assert labels.items() <= engine_pod(r)["metadata"]["labels"].items()  # it matches the engine pods
    assert "nvidia.com/gpu" not in job["containers"][0]["resources"]["limits"], "the Job needs the node, not a GPU"


def test_engine_rolls_when_the_weights_change(tmp_path: Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        return engine_pod(render(tmp_path, values))["metadata"]["annotations"]["checksum/model"]

    base = checksum({})
    assert checksum({"model": {"revision": "0123abcd"}}) != base
    assert checksum({"model": {"allowPatterns": ["*.safetensors"]}}) != base
    assert checksum({"engine": {"maxModelLen": 8192}}) == base


def test_download_extra_env_and_identity(tmp_path: Path) -> None:
    env = [{"name": "HTTPS_PROXY", "value": "http://proxy.corp:3128"}, {"name": "NO_PROXY", "value": ".svc"},
           {"name": "HF_HUB_DOWNLOAD_TIMEOUT", "value": "60"}]
    role = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/weights"}
    for access, where in (("ReadWriteOnce", "engine"), ("ReadWriteMany", "model-download")):
        r = render(tmp_path, {"modelCache": {"accessMode": access,
                                             "download": {"extraEnv": env, "serviceAccount": {"annotations": role}}}})
        container = r.download_container()
        assert all(e in container["env"] for e in env)
        assert r.one("ServiceAccount", where)["metadata"]["annotations"] == role


@pytest.mark.parametrize(("values", "where"), [
    ({"modelCache": {"accessMode": "ReadWriteOncePod", "download": {"mode": "job"}}}, "/modelCache/download/mode"),
    ({"modelCache": {"accessMode": "ReadOnlyMany"}}, "/modelCache/airgapped"),
    ({"modelCache": {"download": {"mode": "sidecar"}}}, "/modelCache/download/mode"),
    ({"modelCache": {"download": {"extraEnv": [{"name": "HF_TOKEN", "value": "hf_x"}]}}},
     "/modelCache/download/extraEnv/0"),
    ({"engine": {"extraEnv": [{"name": "VLLM_API_KEY", "value": "x"}]}}, "/engine/extraEnv/0"),
])
def test_download_values_that_cannot_work_are_rejected(values: dict[str, Any], where: str, tmp_path: Path) -> None:
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode != 0 and where in proc.stderr, proc.stderr


def test_secret_env_from_a_secret_is_fine(tmp_path: Path) -> None:
    ref = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    container = render(tmp_path, {"modelCache": {"download": {"extraEnv": [ref]}}}).download_container()
    assert ref in container["env"]


def egress_targets(r: Rendered, component: str) -> set[tuple[str, int]]:
    rules = r.one("NetworkPolicy", component)["spec"]["egress"]
    return {(peer["ipBlock"]["cidr"], port["port"]) for rule in rules for peer in rule["to"] if "ipBlock" in peer
            for port in rule["ports"]}


@pytest.mark.parametrize(("platform", "source", "uri", "expected"), [
    ("gke", "gcs", "gs://weights/r1", {("169.254.169.254/32", 80), ("169.254.169.252/32", 988)}),
    ("eks", "s3", "s3://weights/r1", {("169.254.170.23/32", 80), ("169.254.169.254/32", 80)}),
])
def test_workload_identity_reaches_the_metadata_endpoints(platform: str, source: str, uri: str,
                                                          expected: set[tuple[str, int]], tmp_path: Path) -> None:
    values = {"platform": platform, "model": {"source": source, "uri": uri}}
    for access, component in (("ReadWriteOnce", "engine"), ("ReadWriteMany", "model-download")):
        r = render(tmp_path, {**values, "modelCache": {"accessMode": access}})
        assert expected <= egress_targets(r, component)
        keyed = render(tmp_path, {**values, "modelCache": {"accessMode": access},
                                  "model": {**values["model"], "credentialsSecret": {"name": "store-keys"}}})
        assert not {cidr for cidr, _ in egress_targets(keyed, component)} & {c for c, _ in expected}, \
            "static keys need no metadata server"
    # the hub needs none either
    assert not {c for c, _ in egress_targets(render(tmp_path, {"platform": platform}), "engine")} & {
        c for c, _ in expected}


def test_private_endpoints_and_explicit_metadata(tmp_path: Path) -> None:
    r = render(tmp_path, {"networkPolicy": {"downloadPrivateCIDRs": ["10.20.0.0/16"], "downloadPorts": [443, 3128],
                                            "metadataEgress": {"enabled": True,
                                                               "endpoints": [{"cidr": "169.254.169.254/32",
                                                                              "port": 80}]}}})
    targets = egress_targets(r, "engine")
    assert {("10.20.0.0/16", 443), ("10.20.0.0/16", 3128), ("0.0.0.0/0", 3128), ("169.254.169.254/32", 80)} <= targets
    assert r.one("NetworkPolicy", "router")["spec"]["egress"] == render(tmp_path, {}).one(
        "NetworkPolicy", "router")["spec"]["egress"], "only the download gets these"


def test_metadata_on_an_existing_cluster_needs_its_endpoints(tmp_path: Path) -> None:
    proc = helm_template(values={"networkPolicy": {"metadataEgress": {"enabled": True}}}, tmp=tmp_path)
    assert proc.returncode != 0 and "networkPolicy.metadataEgress.endpoints" in proc.stderr
