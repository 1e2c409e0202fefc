"""chart_values (the one function behind `dsdeploy values` and Pulumi) and the values/render commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from dsdeploy.cli import main
from infra.chart_values import ChartOptions, ChartValuesError, chart_values
from infra.planner import plan_deployment
from tests.charts.conftest import Rendered, helm_template, parse
from tests.support.fake_secrets import FAKE_KEY
from tests.support.manifests import validate_manifest

COMBOS = [
    ("r1-distill-qwen-7b", "base", None, "gke"),
    ("r1-distill-qwen-14b", "base", None, "eks"),
    ("r1-distill-qwen-32b", "pro", None, "gke"),
    ("r1-distill-llama-70b", "pro", "fp8", "eks"),
    ("r1-distill-qwen-7b", "base", "gptq-int4", "existing"),
]


def render_values(values: dict, tmp_path: Path) -> Rendered:
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = parse(proc.stdout)
    for doc in r.docs:
        validate_manifest(doc)
    return r


@pytest.mark.parametrize(("model", "tier", "quant", "platform"), COMBOS)
def test_planned_values_render_cleanly(model: str, tier: str, quant: str | None, platform: str, tmp_path: Path) -> None:
    plan = plan_deployment(model, tier, quantization=quant)
    values = chart_values(plan, ChartOptions(platform=platform, cloud_fallback=True))
    r = render_values(values, tmp_path)
    c = r.engine_pod_spec()["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == plan.gpus_per_replica == plan.tensor_parallel_size
    assert f"--tensor-parallel-size={plan.tensor_parallel_size}" in c["args"]
    assert f"--max-model-len={plan.max_model_len}" in c["args"]
    assert ("--reasoning-parser=deepseek_r1" in c["args"]) == plan.reasoning
    if plan.vllm_quantization:
        assert f"--quantization={plan.vllm_quantization}" in c["args"]
    # flags the planner wants and the chart has no value for still reach vLLM, once
    assert "--max-num-batched-tokens=8192" in c["args"]
    flags = [a.split("=")[0] for a in c["args"] if a.startswith("--")]
    assert len(flags) == len(set(flags)), flags
    spec = r.engine_pod_spec()
    assert spec["nodeSelector"] == plan.machine(platform).node_labels
    assert f"--model-id={plan.checkpoint or plan.model_id}" in r.download_container()["args"]


def test_cache_holds_the_checkpoint_on_disk() -> None:
    # fp8 applied by vLLM while loading: the cache holds the original bf16 weights (~141 GB), not 72 GB.
    runtime = plan_deployment("r1-distill-llama-70b", "pro", quantization="fp8")
    assert runtime.vllm_quantization == "fp8" and runtime.checkpoint == runtime.model_id
    size = int(chart_values(runtime, ChartOptions(platform="gke"))["modelCache"]["size"].removesuffix("Gi"))
    assert size * 1024**3 > 70553706496 * 2 * 1.2
    # a published quantized checkpoint is what gets downloaded
    published = plan_deployment("r1-distill-qwen-7b", "base", quantization="gptq-int4")
    values = chart_values(published, ChartOptions(platform="gke"))
    assert values["model"]["id"] == published.checkpoint
    assert int(values["modelCache"]["size"].removesuffix("Gi")) * 1024**3 < 15231233024 * 1.3 + 11 * 1024**3


def test_platform_selectors_and_options(tmp_path: Path) -> None:
    plan = plan_deployment("r1-distill-qwen-7b", "base")
    gke = chart_values(plan, ChartOptions(platform="gke"))
    assert gke["engine"]["gpu"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert gke["engine"]["gpu"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    onprem = chart_values(
        plan,
        ChartOptions(
            platform="existing",
            gpu_node_selector={"site/gpu": "a100"},
            gpu_tolerations=[],
            airgapped=True,
            storage_class="nfs",
            engine_replicas_min=1,
            engine_replicas_max=4,
            hf_endpoint="https://hf-mirror.com/",
        ),
    )
    assert onprem["engine"]["gpu"] == {"nodeSelector": {"site/gpu": "a100"}, "tolerations": []}
    assert onprem["model"]["source"] == "none" and onprem["modelCache"]["airgapped"] is True
    assert onprem["modelCache"]["accessMode"] == "ReadWriteMany"
    assert onprem["engine"]["autoscaling"] == {"enabled": True, "minReplicas": 1, "maxReplicas": 4}
    assert onprem["model"]["hfEndpoint"] == "https://hf-mirror.com"
    r = render_values(onprem, tmp_path)
    assert not r.kind("Job") and r.kind("HorizontalPodAutoscaler")
    single = chart_values(plan, ChartOptions(platform="gke", router_replicas=1))
    assert single["router"]["pdb"] == {"enabled": False}  # a one-pod budget would block node drains
    assert not [
        d
        for d in render_values(single, tmp_path).kind("PodDisruptionBudget")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
    ]


def test_server_engine_on_cpu(tmp_path: Path) -> None:
    plan = plan_deployment("r1-distill-qwen-1.5b", "base").model_copy(update={"gpus_per_replica": 0})
    with pytest.raises(ChartValuesError, match="no GPU, and the planner sizes GPU tiers only"):
        chart_values(plan, ChartOptions(platform="existing"))
    values = chart_values(plan, ChartOptions(platform="existing", engine_type="server"))
    r = render_values(values, tmp_path)
    spec = r.engine_pod_spec()
    assert "nodeSelector" not in spec and "tolerations" not in spec
    assert "--device=cpu" in spec["containers"][0]["args"]


@pytest.mark.parametrize("quant", ["bnb-8bit", "bnb-4bit"])
def test_bitsandbytes_goes_to_the_server_because_the_pinned_vllm_has_no_loader(quant: str, tmp_path: Path) -> None:
    plan = plan_deployment("r1-distill-qwen-7b", "base", quantization=quant)
    with pytest.raises(ChartValuesError, match="RFC #39583.*engine_type='server'"):
        chart_values(plan, ChartOptions(platform="gke"))
    values = chart_values(plan, ChartOptions(platform="gke", engine_type="server"))
    c = render_values(values, tmp_path).one("Deployment", "engine")["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["dsdeploy", "serve"] and f"--quantization={quant}" in c["args"]


def test_server_engine_refuses_quantizations_it_cannot_run() -> None:
    plan = plan_deployment("r1-distill-llama-70b", "pro", quantization="fp8")
    with pytest.raises(ChartValuesError, match="not served by the project's server"):
        chart_values(plan, ChartOptions(platform="gke", engine_type="server"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cloud_api_key_secret", FAKE_KEY, "looks like a credential"),
        ("hf_token_secret", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345", "looks like a credential"),
        ("cloud_api_key_secret", "My Secret", "not a valid Secret name"),
        ("engine_api_key_secret", "Engine Key", "not a valid Secret name"),
        ("model_cache_size", "big", "not a Kubernetes quantity"),
        ("hf_endpoint", "hf-mirror.com", "not an http(s) URL"),
        ("platform", "azure", "gke"),
        ("gpu_count", 2, "Extra inputs are not permitted"),
    ],
)
def test_chart_options_reject(field: str, value: object, message: str) -> None:
    kwargs = {"platform": "gke", field: value}
    with pytest.raises(ValidationError, match=re.escape(message)) as err:
        ChartOptions(**kwargs)
    if "credential" in message:
        assert str(value) not in str(err.value), "a secret must never appear in an error"


def test_an_engine_key_secret_of_ones_own_replaces_the_charts(tmp_path: Path) -> None:
    plan = plan_deployment("r1-distill-qwen-7b", "base")
    values = chart_values(plan, ChartOptions(platform="gke", engine_api_key_secret="team-engine-key"))
    assert values["engine"]["apiKey"] == {"existingSecret": "team-engine-key", "key": "api-key"}
    r = render_values(values, tmp_path)
    assert not r.kind("Secret")
    env = {e["name"]: e for e in r.engine_pod_spec()["containers"][0]["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "team-engine-key", "key": "api-key"}
    assert "apiKey" not in chart_values(plan, ChartOptions(platform="gke"))["engine"]


def test_chart_options_replica_order() -> None:
    with pytest.raises(ValidationError, match="below engine_replicas_min"):
        ChartOptions(platform="gke", engine_replicas_min=3, engine_replicas_max=2)


def test_values_command_writes_a_file_that_renders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "values.yaml"
    rc = main(
        [
            "values",
            "--model",
            "r1-distill-llama-70b",
            "--tier",
            "pro",
            "--quantization",
            "fp8",
            "--platform",
            "eks",
            "--cloud-fallback",
            "--engine-replicas",
            "1:3",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    values = yaml.safe_load(out.read_text())
    assert out.read_text().startswith("# dsdeploy chart values")
    assert values["engine"]["tensorParallelSize"] == 4 and values["engine"]["autoscaling"]["maxReplicas"] == 3
    capsys.readouterr()
    rc = main(["render", "-f", str(out), "--namespace", "llm"])
    manifests = capsys.readouterr().out
    assert rc == 0
    r = parse(manifests)
    assert {d["metadata"]["namespace"] for d in r.docs} == {"llm"}
    assert not r.kind("Pod"), "render prints what kubectl should apply: no helm test Pod"
    assert not [d for d in r.docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "test"], (
        "nor the test Pod's ServiceAccount and NetworkPolicy"
    )
    assert r.engine_pod_spec()["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4


def test_values_command_to_stdout_matches_chart_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["values", "--model", "r1-distill-qwen-7b", "--tier", "base", "--platform", "gke"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = chart_values(plan_deployment("r1-distill-qwen-7b", "base"), ChartOptions(platform="gke"))
    assert printed == expected


def test_values_command_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["values", "--model", "v3", "--tier", "pro", "--quantization", "bf16", "--platform", "gke"]) == 1
    assert "does not fit" in capsys.readouterr().err
    assert main(["values", "--model", "r1-distill-qwen-7b", "--tier", "huge", "--platform", "gke"]) == 2
    assert "huge" in capsys.readouterr().err
    key = FAKE_KEY
    assert (
        main(
            [
                "values",
                "--model",
                "r1-distill-qwen-7b",
                "--tier",
                "base",
                "--platform",
                "gke",
                "--cloud-api-key-secret",
                key,
            ]
        )
        == 2
    )
    captured = capsys.readouterr()
    assert "cloud_api_key_secret" in captured.err and key not in captured.err + captured.out
    assert (
        main(
            [
                "values",
                "--model",
                "r1-distill-qwen-7b",
                "--tier",
                "base",
                "--platform",
                "existing",
                "--gpu-node-selector",
                "novalue",
            ]
        )
        == 2
    )
    assert "KEY=VALUE" in capsys.readouterr().err


def test_render_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine:\n  gpus: 2\n")
    assert main(["render", "-f", str(bad)]) == 1
    assert "'gpus' not allowed" in capsys.readouterr().err


def test_render_command_with_cluster_apis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = tmp_path / "v.yaml"
    values.write_text("engine:\n  autoscaling:\n    enabled: true\n")
    assert (
        main(
            [
                "render",
                "-f",
                str(values),
                "--api-versions",
                "keda.sh/v1alpha1",
                "--api-versions",
                "monitoring.coreos.com/v1/ServiceMonitor",
                "--include-tests",
            ]
        )
        == 0
    )
    r = parse(capsys.readouterr().out)
    assert r.kind("ScaledObject") and r.kind("ServiceMonitor") and r.kind("Pod")
    # with --include-tests the Pod comes with its ServiceAccount and NetworkPolicy, all helm test hooks
    test_objects = {
        d["kind"]: d for d in r.docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "test"
    }
    assert set(test_objects) == {"Pod", "ServiceAccount", "NetworkPolicy"}
    assert all(d["metadata"]["annotations"]["helm.sh/hook"] == "test" for d in test_objects.values())
    assert int(test_objects["ServiceAccount"]["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0


@pytest.mark.parametrize(
    ("model", "quant"), [("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "awq-int4"), ("r1-distill-qwen-7b", "awq-int4")]
)
def test_unpublished_quantization_is_an_error_not_the_bf16_weights(
    model: str, quant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # vLLM would load the original bf16 checkpoint (~64 GB for 32B) onto a GPU sized for 4-bit weights.
    assert main(["values", "--model", model, "--tier", "base", "--platform", "gke", "--quantization", quant]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"quantization {quant!r}" in captured.err and "--checkpoint" in captured.err
    assert "gptq-int4 (RedHatAI/" in captured.err  # the published ones are named
    with pytest.raises(ChartValuesError, match="no pre-quantized"):
        chart_values(plan_deployment(model, "base", quantization=quant), ChartOptions(platform="gke"))


def test_checkpoint_option_names_the_pre_quantized_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "values.yaml"
    awq = "example-org/DeepSeek-R1-Distill-Qwen-32B-AWQ"
    assert (
        main(
            [
                "values",
                "--model",
                "r1-distill-qwen-32b",
                "--tier",
                "base",
                "--platform",
                "gke",
                "--quantization",
                "awq-int4",
                "--checkpoint",
                awq,
                "-o",
                str(out),
            ]
        )
        == 0
    )
    text = out.read_text()
    values = yaml.safe_load(text)
    assert values["model"]["id"] == awq and values["engine"]["quantization"] == ""  # read from its config
    assert "no published awq-int4" not in text  # settled by --checkpoint
    warnings = [line for line in text.splitlines() if line.startswith("# warning:")]
    assert warnings and len(warnings) == len(set(warnings))
    err = capsys.readouterr().err
    for line in warnings:  # said once on the terminal as well
        assert err.count(line.removeprefix("# warning: ")) == 1
    # the cache is sized for the 4-bit checkpoint, not the bf16 original
    assert int(values["modelCache"]["size"].removesuffix("Gi")) < 40
    render_values(values, tmp_path)
    with pytest.raises(ValidationError, match="not a hub repository id"):
        ChartOptions(platform="gke", checkpoint="just-a-name")


def test_server_engine_quantizes_the_original_weights_itself() -> None:
    plan = plan_deployment("r1-distill-qwen-7b", "base", quantization="bnb-8bit")
    assert (plan.engine, plan.checkpoint) == ("server", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    values = chart_values(plan, ChartOptions(platform="gke", engine_type="server"))
    assert values["model"]["id"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert values["engine"]["server"]["quantization"] == "bnb-8bit"


@pytest.mark.parametrize(
    ("model", "tier", "quant", "nodes"),
    [
        ("r1", "pro", None, 3),
        ("v3", "pro", "awq-int4", 2),
        ("r1-distill-qwen-32b", "base", None, 3),
    ],
)
def test_a_plan_over_several_nodes_renders_its_leaderworkerset(
    model: str, tier: str, quant: str | None, nodes: int, tmp_path: Path
) -> None:
    plan = plan_deployment(model, tier, quantization=quant)
    assert plan.nodes_per_replica == nodes
    values = chart_values(plan, ChartOptions(platform="gke", checkpoint="org/some-awq" if quant else None))
    engine = values["engine"]
    assert (engine["nodesPerReplica"], engine["gpusPerReplica"]) == (nodes, plan.gpus_per_replica)
    assert engine["multiNode"] == {"workerArgs": ["--headless"]}  # the plan's worker flags beyond the leader's
    assert values["modelCache"]["accessMode"] == "ReadWriteMany"  # every node mounts the cache
    r = render_values(values, tmp_path)
    lws = r.one("LeaderWorkerSet", "engine")
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == nodes
    for role, extra in (("leader", []), ("worker", ["--headless"])):
        args = r.engine_pod_spec(role)["containers"][0]["args"]
        shared = [a for a in args if not a.startswith(("--node-rank", "--master-", "--host", "--port", "--headless"))]
        planned = [f"--{flag}" for flag in ("tensor-parallel-size", "pipeline-parallel-size", "nnodes")]
        for flag in planned:  # the plan's layout reaches every pod
            value = plan.engine_args[plan.engine_args.index(flag) + 1]
            assert any(a in (f"{flag}={value}", f'"{flag}={value}"') for a in shared), (role, flag, args)
        assert [a for a in args if a == "--headless"] == extra
        limit = r.engine_pod_spec(role)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        assert limit == plan.tensor_parallel_size == plan.gpus_per_replica // nodes


def test_values_command_spans_nodes_unless_told_not_to(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["values", "--model", "r1", "--tier", "pro", "--platform", "gke"]) == 0
    out = capsys.readouterr().out
    assert "# one replica spans 3 nodes (pipeline parallel 3): a LeaderWorkerSet" in out
    assert yaml.safe_load(out)["engine"]["nodesPerReplica"] == 3
    assert main(["values", "--model", "r1", "--tier", "pro", "--platform", "gke", "--max-nodes", "1"]) == 1
    assert "--max-nodes 3" in capsys.readouterr().err
    assert main(["values", "--model", "r1", "--tier", "pro", "--platform", "gke", "--engine", "server"]) == 2
    assert "only vLLM's multi-node mode" in capsys.readouterr().err
