"""`dsdeploy images`: every image a deployment pulls, from the chart rendered with its values (real helm)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.cloud import GpuNodeFacts
from infra.gpu_platform import device_plugin, gpu_operator
from infra.images_command import PLATFORM_IMAGES, images_in_manifests, platform_images
from infra.vllm_release import pinned_vllm_tag

REPO = Path(__file__).resolve().parents[2]
CI_VALUES = REPO / "charts" / "dsdeploy" / "ci"


def dsdeploy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsdeploy", "images", *args], capture_output=True, text=True, check=False, cwd=REPO
    )


def listed(*args: str) -> list[str]:
    proc = dsdeploy(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def _reference(image: dict) -> str:
    return (
        f"{image['repository']}@{image['digest']}" if image.get("digest") else f"{image['repository']}:{image['tag']}"
    )


def test_values_file_lists_the_images_it_names_and_nothing_else():
    values = yaml.safe_load((CI_VALUES / "onprem-cpu-values.yaml").read_text())
    cpu_image = {**values["engine"]["vllm"]["cpuImage"], "tag": pinned_vllm_tag()}  # tag "" = the chart's vLLM
    expected = {
        _reference(cpu_image),
        _reference(values["router"]["image"]),
        _reference(values["modelCache"]["download"]["image"]),
    }
    assert set(listed("-f", str(CI_VALUES / "onprem-cpu-values.yaml"))) == expected


def test_the_server_engine_lists_its_cpu_variant():
    values = yaml.safe_load((CI_VALUES / "edge-server-values.yaml").read_text())
    router = yaml.safe_load((CI_VALUES.parent / "values.yaml").read_text())["router"]["image"]
    router = {
        **router,
        "tag": router["tag"] or yaml.safe_load((CI_VALUES.parent / "Chart.yaml").read_text())["appVersion"],
    }
    expected = {_reference(values["engine"]["server"]["image"]), _reference(router)}
    assert set(listed("-f", str(CI_VALUES / "edge-server-values.yaml"))) == expected
    assert values["engine"]["server"]["image"]["tag"].endswith("-cpu")


def test_a_digest_wins_over_the_tag_and_later_files_win(tmp_path: Path):
    digest = "sha256:" + "ab" * 32
    override = tmp_path / "pinned.yaml"
    override.write_text(
        yaml.safe_dump({"router": {"image": {"repository": "mirror.site/dsdeploy-router", "digest": digest}}})
    )
    images = listed("-f", str(CI_VALUES / "gke-base-values.yaml"), "-f", str(override))
    assert f"mirror.site/dsdeploy-router@{digest}" in images
    assert not any("dsdeploy-router:" in image for image in images)


def test_show_origin_names_every_pod_that_pulls_an_image():
    lines = listed("-f", str(CI_VALUES / "eks-pro-values.yaml"), "--show-origin")
    router = next(line for line in lines if "dsdeploy-router" in line.split()[0])
    assert "Deployment/dsdeploy-router router" in router and "Pod/dsdeploy-test smoke" in router
    engine = next(line for line in lines if line.startswith("vllm/vllm-openai"))
    assert "Deployment/dsdeploy-engine engine" in engine and "Job/" in engine, "the download Job uses it too"


def test_any_pod_template_is_covered_whatever_kind_holds_it():
    """A multi-node engine (LeaderWorkerSet), a CronJob and ephemeral containers: found without naming them."""
    manifests = yaml.safe_dump_all(
        [
            {
                "kind": "LeaderWorkerSet",
                "metadata": {"name": "engine"},
                "spec": {
                    "leaderWorkerTemplate": {
                        "leaderTemplate": {
                            "spec": {"containers": [{"name": "leader", "image": "vllm/vllm-openai:v1"}]}
                        },
                        "workerTemplate": {
                            "spec": {
                                "initContainers": [{"name": "wait", "image": "busybox@sha256:" + "0" * 64}],
                                "containers": [{"name": "worker", "image": "vllm/vllm-openai:v1"}],
                            }
                        },
                    }
                },
            },
            {
                "kind": "CronJob",
                "metadata": {"name": "warm"},
                "spec": {
                    "jobTemplate": {
                        "spec": {
                            "template": {
                                "spec": {
                                    "containers": [{"name": "warm", "image": "curl:8"}],
                                    "ephemeralContainers": [{"name": "debug", "image": "debug:1"}],
                                }
                            }
                        }
                    }
                },
            },
            {"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"image": "not-an-image:1"}},
        ]
    )
    assert sorted(p.image for p in images_in_manifests(manifests)) == sorted(
        ["vllm/vllm-openai:v1", "busybox@sha256:" + "0" * 64, "vllm/vllm-openai:v1", "curl:8", "debug:1"]
    )


def test_recorded_platform_images_are_those_of_the_pinned_charts():
    data = yaml.safe_load(PLATFORM_IMAGES.read_text())
    assert data["nvidia-device-plugin"]["version"] == device_plugin.VERSION
    assert data["gpu-operator"]["version"] == gpu_operator.VERSION
    assert f"nvcr.io/nvidia/k8s-device-plugin:v{device_plugin.VERSION}" in [
        e["image"] for e in data["nvidia-device-plugin"]["images"]
    ]
    assert f"nvcr.io/nvidia/gpu-operator:{gpu_operator.VERSION}" in [e["image"] for e in data["gpu-operator"]["images"]]
    switches = {e["when"] for e in data["gpu-operator"]["images"] if "when" in e}
    values = gpu_operator.gpu_operator_values(GpuNodeFacts(labels={}))
    assert switches <= set(values), f"switches {switches} must be gpu_operator_values() keys"


def test_operator_switches_drop_their_images():
    every = {p.image for p in platform_images("gpu-operator", node_os="ubuntu24.04")}
    assert "nvcr.io/nvidia/driver:595.91.07-ubuntu24.04" in every
    bare = {p.image for p in platform_images("gpu-operator", driver=False, toolkit=False, nfd=False)}
    dropped = every - bare
    assert {i.split(":")[0].rsplit("/", 1)[-1] for i in dropped} == {
        "driver",
        "k8s-driver-manager",
        "container-toolkit",
        "node-feature-discovery",
    }
    assert platform_images("none") == []


def test_the_driver_needs_the_node_os():
    proc = dsdeploy("-f", str(CI_VALUES / "airgapped-values.yaml"), "--gpu-enablement", "gpu-operator")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--node-os is required" in proc.stderr and "ubuntu22.04" in proc.stderr and "--no-driver" in proc.stderr
    assert "nvcr.io/nvidia/driver:" not in "\n".join(
        listed("-f", str(CI_VALUES / "airgapped-values.yaml"), "--gpu-enablement", "gpu-operator", "--no-driver")
    )


@pytest.mark.parametrize(
    ("stack", "expected", "absent"),
    [
        ("Pulumi.gke-base.yaml", set(), {"nvcr.io/nvidia/k8s-device-plugin", "nvcr.io/nvidia/gpu-operator"}),
        ("Pulumi.eks-pro.yaml", {f"nvcr.io/nvidia/k8s-device-plugin:v{device_plugin.VERSION}"}, {"gpu-operator"}),
        (
            "Pulumi.onprem.yaml",
            {f"nvcr.io/nvidia/gpu-operator:{gpu_operator.VERSION}", "nvcr.io/nvidia/driver:595.91.07-ubuntu22.04"},
            {"k8s-device-plugin:v0.18"},
        ),
    ],
)
def test_a_stack_brings_its_own_gpu_enablement(stack: str, expected: set[str], absent: set[str]):
    images = listed("--stack", str(REPO / stack), "--node-os", "ubuntu22.04")
    assert any(i.startswith("ghcr.io/dsdeploy/dsdeploy-router:") for i in images)
    assert expected <= set(images)
    assert not any(word in image for word in absent for image in images)


def test_a_stack_file_with_a_bad_key_is_refused_naming_it(tmp_path: Path):
    stack = tmp_path / "Pulumi.bad.yaml"
    stack.write_text(
        yaml.safe_dump(
            {
                "config": {
                    "dsdeploy:platform": "gke",
                    "dsdeploy:tier": "base",
                    "dsdeploy:model": "r1-distill-qwen-7b",
                    "dsdeploy:region": "x",
                    "dsdeploy:zone": "x-a",
                    "dsdeploy:routerReplicas": 99,
                }
            }
        )
    )
    proc = dsdeploy("--stack", str(stack))
    assert proc.returncode == 2 and "dsdeploy:routerReplicas" in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give the deployment's values (-f values.yaml) or its stack"),
        (["-f", "/nonexistent/values.yaml"], "values file /nonexistent/values.yaml does not exist"),
    ],
)
def test_bad_input_is_refused(args: list[str], message: str):
    proc = dsdeploy(*args)
    assert proc.returncode == 2 and message in proc.stderr and proc.stdout == ""


def test_values_the_chart_refuses_are_an_error_not_a_partial_list(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"engine": {"type": "tgi"}}))
    proc = dsdeploy("-f", str(bad))
    assert proc.returncode == 2 and "the chart refused these values" in proc.stderr and proc.stdout == ""


def test_images_the_stack_builds_itself_are_not_listed(tmp_path: Path):
    data = yaml.safe_load((REPO / "Pulumi.gke-base.yaml").read_text())
    data["config"].update({"dsdeploy:images": "build", "dsdeploy:engineType": "server"})
    stack = tmp_path / "Pulumi.build.yaml"
    stack.write_text(yaml.safe_dump(data))
    proc = dsdeploy("--stack", str(stack))
    assert proc.returncode == 0, proc.stderr
    assert not any("dsdeploy-router" in line or "dsdeploy-server" in line for line in proc.stdout.splitlines())
    assert "pulumi up builds dsdeploy-router, dsdeploy-server into the cluster's own registry" in proc.stderr
