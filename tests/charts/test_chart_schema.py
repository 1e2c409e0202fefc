"""values.schema.json rejects bad values before anything renders, and accepts the documented ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.charts.conftest import helm_template, parse

FAKE_KEY = "sk-" + "4f8a9c0d1e2b3a4f5c6d7e8f9a0b1c2d"  # built in two parts: a fake key, not a leak

API_KEY = FAKE_KEY

REJECTED = [
    ("wrong type", {"engine": {"replicas": "two"}}, "/engine/replicas"),
    ("wrong type bool", {"networkPolicy": {"enabled": "yes"}}, "/networkPolicy/enabled"),
    ("unknown key", {"engine": {"gpus": 2}}, "'gpus' not allowed"),
    ("unknown top-level key", {"routr": {"replicas": 2}}, "'routr' not allowed"),
    ("zero GPUs with vLLM", {"engine": {"type": "vllm", "gpusPerReplica": 0}}, "/engine/gpusPerReplica"),
    ("literal API key as Secret name", {"router": {"cloud": {"apiKeySecret": {"name": API_KEY}}}},
     "/router/cloud/apiKeySecret/name"),
    ("literal API key in values", {"router": {"cloud": {"apiKey": API_KEY}}}, "'apiKey' not allowed"),
    ("hub token as Secret name", {"model": {"tokenSecret": {"name": "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"}}},
     "/model/tokenSecret/name"),
    ("raw key instead of digest", {"router": {"auth": {"keysSha256": ["my-client-key"]}}}, "/router/auth/keysSha256/0"),
    ("secret via router.config", {"router": {"config": {"cloud": {"api_key": API_KEY}}}}, "'cloud' not allowed"),
    ("enum", {"engine": {"type": "tgi"}}, "/engine/type"),
    ("range", {"engine": {"gpuMemoryUtilization": 1.5}}, "/engine/gpuMemoryUtilization"),
    ("quantity", {"modelCache": {"size": "lots"}}, "/modelCache/size"),
    ("s3 source with gs uri", {"model": {"source": "s3", "uri": "gs://bucket/m"}}, "/model/uri"),
    ("privileged container", {"containerSecurityContext": {"privileged": True, "runAsNonRoot": True,
                                                           "allowPrivilegeEscalation": False,
                                                           "capabilities": {"drop": ["ALL"]}}},
     "/containerSecurityContext/privileged"),
    ("root pod", {"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
]


@pytest.mark.parametrize(("case", "values", "where"), REJECTED, ids=[c[0] for c in REJECTED])
def test_schema_rejects(case: str, values: dict, where: str, tmp_path: Path) -> None:
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode != 0, f"{case}: accepted"
    assert "schema" in proc.stderr and where in proc.stderr, proc.stderr
    assert API_KEY not in proc.stderr + proc.stdout, "the error must not echo a secret"


ACCEPTED = [
    ("server engine on CPU", {"engine": {"type": "server", "gpusPerReplica": 0}}),
    ("defaults", {}),
    ("monitoring forced", {"monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": False}}}),
    ("s3 source", {"model": {"source": "s3", "uri": "s3://weights/deepseek/r1-7b"}}),
    ("gateway route", {"router": {"httpRoute": {"enabled": True, "parentRefs": [{"name": "public-gw"}],
                                                "hostnames": ["ai.example.com"]}}}),
    ("digest pin", {"router": {"image": {"repository": "r.example/router", "tag": "", "pullPolicy": "IfNotPresent",
                                         "digest": "sha256:" + "a" * 64}}}),
]


@pytest.mark.parametrize(("case", "values"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_schema_accepts(case: str, values: dict, tmp_path: Path) -> None:
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode == 0, f"{case}: {proc.stderr}"
    assert "kind: Deployment" in proc.stdout


def test_object_store_source_renders(tmp_path: Path) -> None:
    proc = helm_template(values={"model": {"source": "s3", "uri": "s3://weights/deepseek/r1-7b",
                                           "credentialsSecret": {"name": "s3-creds"}}}, tmp=tmp_path)
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
