"""values.schema.json rejects bad values before anything renders, and accepts the documented ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.charts.conftest import helm_template, parse
from tests.support.fake_secrets import FAKE_KEY

API_KEY = FAKE_KEY

REJECTED = [
    ("wrong type", {"engine": {"replicas": "two"}}, "/engine/replicas"),
    ("wrong type bool", {"networkPolicy": {"enabled": "yes"}}, "/networkPolicy/enabled"),
    ("unknown key", {"engine": {"gpus": 2}}, "'gpus' not allowed"),
    ("unknown top-level key", {"routr": {"replicas": 2}}, "'routr' not allowed"),
    (
        "bitsandbytes to vLLM (the pinned release has none)",
        {"engine": {"quantization": "bitsandbytes"}},
        "/engine/quantization",
    ),
    ("CPU KV cache of zero", {"engine": {"vllm": {"cpu": {"kvCacheGiB": 0}}}}, "/engine/vllm/cpu/kvCacheGiB"),
    (
        "literal API key as Secret name",
        {"router": {"cloud": {"apiKeySecret": {"name": API_KEY}}}},
        "/router/cloud/apiKeySecret/name",
    ),
    ("literal API key in values", {"router": {"cloud": {"apiKey": API_KEY}}}, "'apiKey' not allowed"),
    (
        "hub token as Secret name",
        {"model": {"tokenSecret": {"name": "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"}}},
        "/model/tokenSecret/name",
    ),
    ("raw key instead of digest", {"router": {"auth": {"keysSha256": ["my-client-key"]}}}, "/router/auth/keysSha256/0"),
    ("secret via router.config", {"router": {"config": {"cloud": {"api_key": API_KEY}}}}, "'cloud' not allowed"),
    ("enum", {"engine": {"type": "tgi"}}, "/engine/type"),
    ("range", {"engine": {"gpuMemoryUtilization": 1.5}}, "/engine/gpuMemoryUtilization"),
    ("quantity", {"modelCache": {"size": "lots"}}, "/modelCache/size"),
    ("s3 source with gs uri", {"model": {"source": "s3", "uri": "gs://bucket/m"}}, "/model/uri"),
    (
        "privileged container",
        {
            "containerSecurityContext": {
                "privileged": True,
                "runAsNonRoot": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            }
        },
        "/containerSecurityContext/privileged",
    ),
    ("root pod", {"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    # Values that render but break on a cluster:
    (
        "auth required without keys (router crash-loops)",
        {"router": {"auth": {"allowUnauthenticated": False}}},
        "/router/auth/keysSha256",
    ),
    (
        "cloud fallback without its Secret (empty secretKeyRef)",
        {"router": {"cloud": {"enabled": True, "apiKeySecret": {"name": ""}}}},
        "/router/cloud/apiKeySecret/name",
    ),
    (
        "vLLM without a tag (would get the chart's appVersion)",
        {"engine": {"vllm": {"image": {"tag": ""}}}},
        "/engine/vllm/image/tag",
    ),
    ("gguf quantization on vLLM (no .gguf file passed)", {"engine": {"quantization": "gguf"}}, "/engine/quantization"),
    ("gguf file on vLLM", {"model": {"ggufFile": "model.Q4_K_M.gguf"}}, "/model/ggufFile"),
    ("unknown reasoning parser", {"engine": {"reasoningParser": "deepseek"}}, "/engine/reasoningParser"),
    (
        "client keys but no key for helm test (401)",
        {"router": {"auth": {"keysSha256": ["2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}}},
        "/tests/apiKeySecret/name",
    ),
]


@pytest.mark.parametrize(("case", "values", "where"), REJECTED, ids=[c[0] for c in REJECTED])
def test_schema_rejects(case: str, values: dict, where: str, tmp_path: Path) -> None:
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode != 0, f"{case}: accepted"
    assert "schema" in proc.stderr and where in proc.stderr, proc.stderr
    assert API_KEY not in proc.stderr + proc.stdout, "the error must not echo a secret"


ACCEPTED = [
    ("server engine on CPU", {"engine": {"type": "server", "gpusPerReplica": 0}}),
    ("vLLM's CPU image", {"engine": {"type": "vllm", "gpusPerReplica": 0}}),
    ("defaults", {}),
    ("monitoring forced", {"monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": False}}}),
    ("s3 source", {"model": {"source": "s3", "uri": "s3://weights/deepseek/r1-7b"}}),
    (
        "gateway route",
        {
            "router": {
                "httpRoute": {"enabled": True, "parentRefs": [{"name": "public-gw"}], "hostnames": ["ai.example.com"]}
            }
        },
    ),
    (
        "digest pin",
        {
            "router": {
                "image": {
                    "repository": "r.example/router",
                    "tag": "",
                    "pullPolicy": "IfNotPresent",
                    "digest": "sha256:" + "a" * 64,
                }
            }
        },
    ),
    (
        "vLLM by digest only",
        {
            "engine": {
                "vllm": {
                    "image": {
                        "repository": "vllm/vllm-openai",
                        "tag": "",
                        "pullPolicy": "IfNotPresent",
                        "digest": "sha256:" + "b" * 64,
                    }
                }
            }
        },
    ),
    (
        "gguf on the server engine",
        {"engine": {"type": "server", "gpusPerReplica": 0}, "model": {"ggufFile": "model.Q4_K_M.gguf"}},
    ),
    ("V3.1 parser", {"engine": {"reasoningParser": "deepseek_v3"}}),
    (
        "client keys, helm test off",
        {
            "tests": {"enabled": False},
            "router": {
                "auth": {
                    "allowUnauthenticated": False,
                    "keysSha256": ["2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"],
                }
            },
        },
    ),
    ("cloud off with no Secret name", {"router": {"cloud": {"enabled": False, "apiKeySecret": {"name": ""}}}}),
    (
        "pipeline parallel fills the GPUs",
        {"engine": {"gpusPerReplica": 4, "tensorParallelSize": 2, "extraArgs": ["--pipeline-parallel-size=2"]}},
    ),
]


@pytest.mark.parametrize(("case", "values"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_schema_accepts(case: str, values: dict, tmp_path: Path) -> None:
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode == 0, f"{case}: {proc.stderr}"
    assert "kind: Deployment" in proc.stdout


def test_object_store_source_renders(tmp_path: Path) -> None:
    proc = helm_template(
        values={
            "model": {"source": "s3", "uri": "s3://weights/deepseek/r1-7b", "credentialsSecret": {"name": "s3-creds"}}
        },
        tmp=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    args = parse(proc.stdout).download_container()["args"]
    assert "--uri=s3://weights/deepseek/r1-7b" in args and not [a for a in args if a.startswith("--model-id")]
    assert "CKV_K8S_35=" in proc.stdout  # the env-var credentials carry their checkov reason


def test_object_store_source_needs_uri(tmp_path: Path) -> None:
    proc = helm_template(values={"model": {"source": "gcs"}}, tmp=tmp_path)
    assert proc.returncode != 0 and "/model/uri" in proc.stderr and "gs://" in proc.stderr


def test_tensor_parallel_needs_the_gpus(tmp_path: Path) -> None:
    proc = helm_template(values={"engine": {"gpusPerReplica": 2, "tensorParallelSize": 4}}, tmp=tmp_path)
    assert proc.returncode != 0
    assert "engine.tensorParallelSize (4) needs as many GPUs, but engine.gpusPerReplica is 2" in proc.stderr


def test_httproute_needs_a_gateway(tmp_path: Path) -> None:
    proc = helm_template(values={"router": {"httpRoute": {"enabled": True}}}, tmp=tmp_path)
    assert proc.returncode != 0 and "parentRefs" in proc.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"engine": {"gpusPerReplica": 4, "tensorParallelSize": 2}},
            "engine.gpusPerReplica is 4 but vLLM would use 2 GPU(s)",
        ),
        (
            {"engine": {"gpusPerReplica": 4, "tensorParallelSize": 2, "extraArgs": ["--pipeline-parallel-size", "3"]}},
            "engine.gpusPerReplica is 4 but vLLM would use 6 GPU(s)",
        ),
        (
            {"engine": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 2}}},
            "engine.autoscaling.minReplicas (3) is above engine.autoscaling.maxReplicas (2)",
        ),
        (
            {"router": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 4}}},
            "router.autoscaling.minReplicas (5) is above router.autoscaling.maxReplicas (4)",
        ),
    ],
)
def test_templates_refuse_what_the_schema_cannot_compare(values: dict, message: str, tmp_path: Path) -> None:
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("headless", [True, False])
def test_engine_port_is_the_same_everywhere(headless: bool, tmp_path: Path) -> None:
    """The router's upstream URL, the pod's port and both NetworkPolicies agree on a non-default port."""
    import yaml

    proc = helm_template(values={"engine": {"port": 9000, "service": {"headless": headless, "port": 80}}}, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = parse(proc.stdout)
    url = yaml.safe_load(r.one("ConfigMap", "router")["data"]["router.yaml"])["upstreams"][0]["url"]
    # headless: the name resolves to pod IPs, so the pod's port; ClusterIP: the Service's port
    assert url.endswith(":9000" if headless else ":80")
    engine = r.engine_pod_spec()["containers"][0]
    assert engine["ports"][0]["containerPort"] == 9000 and "--port=9000" in engine["args"]
    assert r.one("Service", "engine")["spec"]["ports"][0]["targetPort"] == "http"
    router_egress = r.one("NetworkPolicy", "router")["spec"]["egress"]
    engine_rule = next(rule for rule in router_egress if any("podSelector" in p for p in rule["to"]))
    assert engine_rule["ports"] == [{"protocol": "TCP", "port": 9000}]
    assert r.one("NetworkPolicy", "engine")["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9000}]
