"""Who downloads the weights and where it runs: always a Job of its own (the engine pod has no egress and no
cloud identity), and nothing may wait forever on a ReadWriteOnce volume."""

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


def test_read_write_once_cache_downloads_in_a_job_on_the_engines_node(tmp_path: Path) -> None:
    """The default (and gke-base, the GitOps examples): the download runs in a pod of its own, never in the engine
    pod, and on the node the engine pod of these very weights runs on (ReadWriteOnce: several pods, one node)."""
    r = render(
        tmp_path, {"engine": {"gpu": {"nodeSelector": GPU_SELECTOR}}, "model": {"tokenSecret": {"name": "hf-token"}}}
    )
    whole = r.one("Job", "model-download")["spec"]
    job = whole["template"]["spec"]
    # Pending until the engine's node exists (a Flex-start pool: hours): the deadline counts from the pod's start
    assert "activeDeadlineSeconds" not in whole and job["activeDeadlineSeconds"] == 10800
    assert "--source=hf" in job["containers"][0]["args"]
    assert {"name": "model-cache", "mountPath": "/models"} in job["containers"][0]["volumeMounts"]  # writable here
    assert [v for v in job["volumes"] if v["name"] == "token"], "the hub token goes to the Job only"
    assert job["nodeSelector"] == GPU_SELECTOR and GPU_TOLERATION in job["tolerations"]
    [term] = job["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    engine = engine_pod(r)
    assert term["labelSelector"]["matchLabels"].items() <= engine["metadata"]["labels"].items()
    assert "dsdeploy.io/weights" in term["labelSelector"]["matchLabels"], "never next to an old pod of other weights"
    spec = engine["spec"]
    [init] = spec["initContainers"]
    assert init["name"] == "wait-for-model" and any(a.startswith("--wait=") for a in init["args"])
    assert all(m.get("readOnly") for m in init["volumeMounts"]), "the wait only reads the volume"
    claim = next(v for v in spec["volumes"] if v["name"] == "model-cache")["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    assert not [v for v in spec["volumes"] if v["name"] == "token"]
    assert r.one("NetworkPolicy", "engine")["spec"]["egress"] == []
    assert "model-download" in components(r, "NetworkPolicy") and "model-download" in components(r, "ServiceAccount")


def test_the_weights_label_follows_the_model_only(tmp_path: Path) -> None:
    def weights(values: dict[str, Any]) -> str:
        return engine_pod(render(tmp_path, values))["metadata"]["labels"]["dsdeploy.io/weights"]

    base = weights({})
    assert weights({"model": {"revision": "0123abcd"}}) != base
    assert weights({"engine": {"maxModelLen": 8192}}) == base


def test_the_download_job_gets_a_new_name_for_any_change_of_what_it_runs(tmp_path: Path) -> None:
    """A Job's pod template is immutable: helm upgrade or Argo CD must create a new Job, not patch the old one."""

    def job_name(values: dict[str, Any]) -> str:
        return render(tmp_path, values).one("Job", "model-download")["metadata"]["name"]

    base = job_name({})
    changes = [
        {"engine": {"nodeSelector": {"pool": "gpu-b"}}},
        {"model": {"revision": "abc"}},
        {"modelCache": {"download": {"maxWorkers": 4}}},
        {"modelCache": {"accessMode": "ReadWriteMany"}},
    ]
    names = {job_name(change) for change in changes}
    assert base not in names and len(names) == len(changes)
    assert job_name({"engine": {"maxModelLen": 8192}}) == base, "what the Job does not run keeps its name"


def test_read_write_many_cache_uses_a_job_and_the_engine_waits_for_its_marker(tmp_path: Path) -> None:
    r = render(
        tmp_path,
        {
            "modelCache": {"accessMode": "ReadWriteMany"},
            "model": {"revision": "abc123", "allowPatterns": ["*.json", "*.safetensors"]},
        },
    )
    whole = r.one("Job", "model-download")["spec"]
    job = whole["template"]["spec"]
    assert "nodeSelector" not in job and "affinity" not in job, "a shared volume: any node, no GPU needed"
    assert whole["activeDeadlineSeconds"] == 10800 and "activeDeadlineSeconds" not in job
    [init] = engine_pod(r)["spec"]["initContainers"]
    assert init["name"] == "wait-for-model" and any(a.startswith("--wait=") for a in init["args"])
    identity = [
        a
        for a in job["containers"][0]["args"]
        if a.split("=")[0] in ("--source", "--model-id", "--revision", "--allow-pattern")
    ]
    assert identity == [
        a for a in init["args"] if a.split("=")[0] in ("--source", "--model-id", "--revision", "--allow-pattern")
    ]
    assert "--revision=abc123" in identity and "--allow-pattern=*.safetensors" in identity
    assert r.one("NetworkPolicy", "engine")["spec"]["egress"] == []
    assert "model-download" in components(r, "NetworkPolicy") and "model-download" in components(r, "ServiceAccount")


def test_job_on_read_write_once_adds_the_engines_placement_to_its_own(tmp_path: Path) -> None:
    r = render(
        tmp_path,
        {
            "modelCache": {"download": {"nodeSelector": {"pool": "gpu"}}},
            "engine": {
                "gpu": {"nodeSelector": GPU_SELECTOR},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            },
        },
    )
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
    env = [
        {"name": "HTTPS_PROXY", "value": "http://proxy.corp:3128"},
        {"name": "NO_PROXY", "value": ".svc"},
        {"name": "HF_HUB_DOWNLOAD_TIMEOUT", "value": "60"},
    ]
    role = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/weights"}
    for access in ("ReadWriteOnce", "ReadWriteMany"):
        r = render(
            tmp_path,
            {
                "modelCache": {
                    "accessMode": access,
                    "download": {"extraEnv": env, "serviceAccount": {"annotations": role}},
                }
            },
        )
        container = r.download_container()
        assert all(e in container["env"] for e in env)
        assert r.one("ServiceAccount", "model-download")["metadata"]["annotations"] == role
        assert "annotations" not in r.one("ServiceAccount", "engine")["metadata"], "the engine has no identity"
        assert not [e for e in engine_pod(r)["spec"]["containers"][0]["env"] if e in env]


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"modelCache": {"accessMode": "ReadWriteOncePod"}}, "/modelCache/airgapped"),
        ({"modelCache": {"download": {"mode": "initContainer"}}}, "/modelCache/download/mode"),
        (
            {
                "engine": {
                    "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "w@p.iam.gserviceaccount.com"}}
                }
            },
            "engine.serviceAccount.annotations: iam.gke.io/gcp-service-account is a cloud identity",
        ),
        (
            {"engine": {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}}}},
            "engine.serviceAccount.annotations: eks.amazonaws.com/role-arn is a cloud identity",
        ),
        ({"modelCache": {"accessMode": "ReadOnlyMany"}}, "/modelCache/airgapped"),
        ({"modelCache": {"download": {"mode": "sidecar"}}}, "/modelCache/download/mode"),
        (
            {"modelCache": {"download": {"extraEnv": [{"name": "HF_TOKEN", "value": "hf_x"}]}}},
            "/modelCache/download/extraEnv/0",
        ),
        ({"engine": {"extraEnv": [{"name": "VLLM_API_KEY", "value": "x"}]}}, "/engine/extraEnv/0"),
    ],
)
def test_download_values_that_cannot_work_are_rejected(values: dict[str, Any], where: str, tmp_path: Path) -> None:
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode != 0 and where in proc.stderr, proc.stderr


def test_secret_env_from_a_secret_is_fine(tmp_path: Path) -> None:
    ref = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    container = render(tmp_path, {"modelCache": {"download": {"extraEnv": [ref]}}}).download_container()
    assert ref in container["env"]


def egress_targets(r: Rendered, component: str) -> set[tuple[str, int]]:
    rules = r.one("NetworkPolicy", component)["spec"]["egress"]
    return {
        (peer["ipBlock"]["cidr"], port["port"])
        for rule in rules
        for peer in rule["to"]
        if "ipBlock" in peer
        for port in rule["ports"]
    }


@pytest.mark.parametrize(
    ("platform", "source", "uri", "expected"),
    [
        ("gke", "gcs", "gs://weights/r1", {("169.254.169.254/32", 80), ("169.254.169.252/32", 988)}),
        ("eks", "s3", "s3://weights/r1", {("169.254.170.23/32", 80), ("169.254.169.254/32", 80)}),
    ],
)
def test_workload_identity_reaches_the_metadata_endpoints(
    platform: str, source: str, uri: str, expected: set[tuple[str, int]], tmp_path: Path
) -> None:
    values = {"platform": platform, "model": {"source": source, "uri": uri}}
    for access in ("ReadWriteOnce", "ReadWriteMany"):
        component = "model-download"
        r = render(tmp_path, {**values, "modelCache": {"accessMode": access}})
        assert expected <= egress_targets(r, component)
        assert r.one("NetworkPolicy", "engine")["spec"]["egress"] == [], "the engine never reaches the metadata server"
        keyed = render(
            tmp_path,
            {
                **values,
                "modelCache": {"accessMode": access},
                "model": {**values["model"], "credentialsSecret": {"name": "store-keys"}},
            },
        )
        assert not {cidr for cidr, _ in egress_targets(keyed, component)} & {c for c, _ in expected}, (
            "static keys need no metadata server"
        )
    # the hub needs none either
    assert not {c for c, _ in egress_targets(render(tmp_path, {"platform": platform}), "model-download")} & {
        c for c, _ in expected
    }


def test_private_endpoints_and_explicit_metadata(tmp_path: Path) -> None:
    r = render(
        tmp_path,
        {
            "networkPolicy": {
                "downloadPrivateCIDRs": ["10.20.0.0/16"],
                "downloadPorts": [443, 3128],
                "metadataEgress": {"enabled": True, "endpoints": [{"cidr": "169.254.169.254/32", "port": 80}]},
            }
        },
    )
    targets = egress_targets(r, "model-download")
    assert r.one("NetworkPolicy", "engine")["spec"]["egress"] == []
    assert {("10.20.0.0/16", 443), ("10.20.0.0/16", 3128), ("0.0.0.0/0", 3128), ("169.254.169.254/32", 80)} <= targets
    assert (
        r.one("NetworkPolicy", "router")["spec"]["egress"]
        == render(tmp_path, {}).one("NetworkPolicy", "router")["spec"]["egress"]
    ), "only the download gets these"


def test_metadata_on_an_existing_cluster_needs_its_endpoints(tmp_path: Path) -> None:
    proc = helm_template(values={"networkPolicy": {"metadataEgress": {"enabled": True}}}, tmp=tmp_path)
    assert proc.returncode != 0 and "networkPolicy.metadataEgress.endpoints" in proc.stderr
