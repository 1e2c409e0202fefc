"""``images: build``: the registry, the docker-build Images and the digests reaching the chart, under mocks.

The builds themselves cannot run here (no Docker daemon; the buildah test builds the same Dockerfiles), so
this is the seam: what the program asks the provider to build and push, where, with which credentials, and
that the chart is handed exactly the pushed digests (rendered by real helm).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from pulumi_harness import MOCK_TOKEN, ProgramRun, image_digest, run_program
from pulumi_stacks import KUBECONFIG, R1_7B

from dsdeploy.images import package_version
from infra.chart_values import CHART_DIR
from infra.stack_config import StackConfigError, validate_stack_config
from tests.charts.conftest import helm_path

IMAGE = "docker-build:index:Image"
VERSION = package_version()
GKE = {
    "platform": "gke",
    "tier": "base",
    "model": R1_7B,
    "quantization": "bf16",
    "region": "us-central1",
    "zone": "us-central1-a",
    "gcpProject": "acme-ml",
    "images": "build",
    "engineType": "server",
}
EKS = {"platform": "eks", "tier": "base", "model": R1_7B, "region": "eu-west-1", "images": "build"}
EXISTING = {
    "platform": "existing",
    "tier": "base",
    "model": R1_7B,
    "images": "build",
    "imageRegistry": "registry.example.com:5000/ml",
    "gpusAlreadyEnabled": True,
}
_RUNS: dict[str, ProgramRun] = {}


def _run(name: str) -> ProgramRun:
    if name not in _RUNS:
        raw, secrets = {
            "gke": (GKE, {}),
            "eks": (EKS, {}),
            "existing": (EXISTING, {"kubeconfig": KUBECONFIG}),
            "published": ({**GKE, "images": "published"}, {}),
        }[name]
        _RUNS[name] = run_program(raw, secrets)
    return _RUNS[name]


def _values(run: ProgramRun) -> dict:
    return run.one("kubernetes:helm.sh/v4:Chart", "dsdeploy").inputs["values"]


def _rendered_images(run: ProgramRun, tmp_path: Path) -> set[str]:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(_values(run)))
    text = subprocess.run(
        [helm_path(), "template", "dsdeploy", str(CHART_DIR), "-f", str(values_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split("image:", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("image:")}


def test_gke_builds_into_an_artifact_registry_the_nodes_may_read(tmp_path: Path):
    run = _run("gke")
    repo = run.one("gcp:artifactregistry/repository:Repository")
    assert repo.inputs["format"] == "DOCKER" and repo.inputs["location"] == "us-central1"
    assert repo.inputs["project"] == "acme-ml"
    registry = f"us-central1-docker.pkg.dev/acme-ml/{repo.inputs['repositoryId']}"
    reader = run.one("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
    assert reader.inputs["role"] == "roles/artifactregistry.reader"
    assert reader.inputs["member"] == "serviceAccount:987654321098-compute@developer.gserviceaccount.com"
    images = {r.name: r for r in run.of_type(IMAGE)}
    assert set(images) == {"images-router", "images-server-cuda"}, "engineType server on a GPU tier: CUDA server"
    router = images["images-router"]
    assert router.inputs["tags"] == [f"{registry}/dsdeploy-router:{VERSION}"]
    assert router.inputs["push"] is True and router.inputs["platforms"] == ["linux/amd64"]
    assert router.inputs["dockerfile"]["location"].endswith("inference/Dockerfile.router")
    assert images["images-server-cuda"].inputs["buildArgs"] == {"VARIANT": "cuda"}
    [login] = router.inputs["registries"]
    assert login == {"address": "us-central1-docker.pkg.dev", "username": "oauth2accesstoken", "password": MOCK_TOKEN}
    assert "registries[0].password" in router.secret_paths, "the access token is a secret"
    values = _values(run)
    assert values["router"]["image"] == {
        "repository": f"{registry}/dsdeploy-router",
        "digest": image_digest("images-router"),
    }
    assert values["engine"]["server"]["image"]["digest"] == image_digest("images-server-cuda")
    assert _rendered_images(run, tmp_path) == {
        f"{registry}/dsdeploy-router@{image_digest('images-router')}",
        f"{registry}/dsdeploy-server@{image_digest('images-server-cuda')}",
    }
    assert {"images-router", "images-server-cuda"} <= set(run.dependencies["dsdeploy"]), (
        "the chart is installed after the push"
    )
    assert run.outputs["images"] == {
        "router": f"{registry}/dsdeploy-router@{image_digest('images-router')}",
        "server-cuda": f"{registry}/dsdeploy-server@{image_digest('images-server-cuda')}",
    }


def test_eks_builds_into_ecr_repositories_of_the_stack_region():
    run = _run("eks")
    [repo] = run.of_type("aws:ecr/repository:Repository")
    assert repo.inputs["name"] == "dsdeploy/dsdeploy-router", "engineType vllm: only the router is built"
    assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo.inputs["forceDelete"] is True, "pulumi destroy can remove it (deletionProtection is off)"
    provider = next(r for r in run.of_type("pulumi:providers:aws") if r.name == "images-aws")
    assert provider.inputs["region"] == "eu-west-1"
    assert "::images-aws::" in repo.provider, repo.provider
    [image] = run.of_type(IMAGE)
    url = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dsdeploy/dsdeploy-router"
    assert image.inputs["tags"] == [f"{url}:{VERSION}"]
    assert image.inputs["registries"] == [
        {"address": "123456789012.dkr.ecr.us-east-1.amazonaws.com", "username": "AWS", "password": MOCK_TOKEN}
    ]
    assert _values(run)["router"]["image"] == {"repository": url, "digest": image_digest("images-router")}
    assert "engine" not in _values(run) or "server" not in _values(run)["engine"]


def test_an_existing_cluster_pushes_to_the_named_registry_with_the_local_login():
    run = _run("existing")
    assert not run.of_type("gcp:artifactregistry/repository:Repository")
    assert not run.of_type("aws:ecr/repository:Repository")
    [image] = run.of_type(IMAGE)
    assert image.inputs["tags"] == [f"registry.example.com:5000/ml/dsdeploy-router:{VERSION}"]
    assert not image.inputs.get("registries"), "no credentials in the stack: docker login on this machine"
    assert _values(run)["router"]["image"]["repository"] == "registry.example.com:5000/ml/dsdeploy-router"


def test_published_is_the_default_and_builds_nothing():
    run = _run("published")
    assert not run.of_type(IMAGE) and not run.of_type("gcp:artifactregistry/repository:Repository")
    assert "image" not in _values(run)["router"], "the chart's defaults: the released images"
    assert run.outputs["images"] == {}
    assert validate_stack_config({k: v for k, v in GKE.items() if k != "images"}).images == "published"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**EXISTING, "imageRegistry": None}, "dsdeploy:imageRegistry: missing; allowed: the registry prefix"),
        (
            {**GKE, "images": "published", "imageRegistry": "registry.example.com/ml"},
            "dsdeploy:imageRegistry: 'registry.example.com/ml' is not valid; allowed: unset unless images is build",
        ),
        ({**EXISTING, "imageRegistry": "https://registry.example.com/ml"}, "dsdeploy:imageRegistry: "),
        ({**GKE, "images": "local"}, "dsdeploy:images: 'local' is not valid; allowed: 'published' or 'build'"),
    ],
)
def test_bad_image_settings_are_refused_naming_the_key(raw: dict, message: str):
    present = {"kubeconfig"} if raw["platform"] == "existing" else set()
    with pytest.raises(StackConfigError) as err:
        validate_stack_config({k: v for k, v in raw.items() if v is not None}, present)
    assert message in str(err.value)


def test_a_cpu_tier_server_gets_the_cpu_image():
    from infra.registry import images_to_build

    cfg = validate_stack_config({**GKE})
    assert [i.key for i in images_to_build(cfg, gpus_per_replica=0)] == ["router", "server-cpu"]
    assert [i.key for i in images_to_build(cfg, gpus_per_replica=4)] == ["router", "server-cuda"]
