"""Stack config: Pulumi.yaml declarations, example stacks, the engine's config path, and user-facing errors."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pytest
import yaml
from pulumi_harness import ProgramRun, RecordingMocks, run_program
from pulumi_stacks import KUBECONFIG

from infra.planner import plan_deployment
from infra.stack_config import (
    SECRET_KEYS,
    StackConfig,
    StackConfigError,
    read_pulumi_config,
    read_stack_file,
    validate_stack_config,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_STACKS = sorted(ROOT.glob("Pulumi.*.yaml"))
GKE = {"platform": "gke", "tier": "base", "model": "r1-distill-qwen-7b", "region": "us-central1",
       "zone": "us-central1-a"}


def test_pulumi_yaml_declares_exactly_the_validated_keys():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "dsdeploy" and project["main"] == "infra/"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    declared = project["config"]
    model_keys = {field.alias or name for name, field in StackConfig.model_fields.items()} | set(SECRET_KEYS)
    assert set(declared) == model_keys
    for key, spec in declared.items():
        assert spec["type"] in {"string", "integer", "boolean", "array"}, key
        assert len(spec["description"]) > 20, key
    assert all(declared[key].get("secret") is True for key in SECRET_KEYS)


def test_there_are_the_four_example_stacks():
    assert {path.name for path in EXAMPLE_STACKS} >= {
        "Pulumi.gke-base.yaml", "Pulumi.gke-pro.yaml", "Pulumi.eks-pro.yaml", "Pulumi.onprem.yaml"}


@pytest.mark.parametrize("path", EXAMPLE_STACKS, ids=lambda p: p.name)
def test_example_stack_parses_validates_and_plans(path):
    values, secure = read_stack_file(path)
    assert not secure, "example stacks carry no secret values, not even encrypted ones"
    assert not (set(values) & set(SECRET_KEYS))
    text = path.read_text()
    # The secrets the stack needs are set by the commands its comments give; with them it validates.
    needed = {key for key in SECRET_KEYS if f"pulumi config set --secret {key}" in text}
    cfg = validate_stack_config(values, needed)
    if cfg.cloud_fallback:
        assert "deepseekApiKey" in needed
    if cfg.platform == "existing":
        assert "kubeconfig" in needed
    else:
        assert "Cost warning" in text
    plan = plan_deployment(cfg.model, cfg.tier, quantization=cfg.quantization, context=cfg.context)
    assert plan.tensor_parallel_size >= 1


def test_example_stack_without_its_secret_is_refused():
    values, _ = read_stack_file(ROOT / "Pulumi.gke-pro.yaml")
    with pytest.raises(StackConfigError, match=r"deepseekApiKey: missing.*pulumi config set --secret deepseekApiKey"):
        validate_stack_config(values)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"replicasMin": 3, "replicasMax": 2}, r"dsdeploy:replicasMax: 2 is not valid.*>= replicasMin \(3\)"),
        ({"replicasMin": "many"}, r"dsdeploy:replicasMin: 'many' is not valid"),
        ({"zone": "europe-west4-a"}, r"dsdeploy:zone: 'europe-west4-a'.*inside region us-central1"),
        ({"provisioning": "reserved"}, r"dsdeploy:provisioning: 'reserved'.*'on-demand', 'spot', 'flex-start'"),
        ({"provisioning": "reservation"}, r"dsdeploy:reservationName: missing"),
        ({"storageSize": "lots"}, r"dsdeploy:storageSize: 'lots'.*Kubernetes quantity"),
        ({"gpuDriverVersion": "INSTALLATION_DISABLED"}, r"gpuDriverVersion.*'LATEST' or 'DEFAULT'"),
        ({"gpuNodeLabels": ["a=b"]}, r"dsdeploy:gpuNodeLabels.*unset on gke/eks"),
        ({"tierr": "pro"}, r"dsdeploy:tierr: is not a known key; allowed keys: .*tier"),
        ({"gpuMemoryUtilization": "1.5"}, r"dsdeploy:gpuMemoryUtilization: '1.5'"),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(change, message):
    with pytest.raises(StackConfigError, match=message):
        validate_stack_config({**GKE, **change})


def test_existing_cluster_labels_and_taints_in_kubectl_syntax():
    cfg = validate_stack_config(
        {"platform": "existing", "tier": "pro", "model": "r1-distill-llama-70b",
         "gpuNodeLabels": '["nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3"]',
         "gpuNodeTaints": '["nvidia.com/gpu:NoSchedule", "team=ml:NoExecute"]'},
        {"kubeconfig"},
    )
    assert cfg.gpu_node_labels == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert [t.model_dump() for t in cfg.gpu_node_taints] == [
        {"key": "nvidia.com/gpu", "value": None, "effect": "NoSchedule"},
        {"key": "team", "value": "ml", "effect": "NoExecute"},
    ]
    with pytest.raises(StackConfigError, match=r"gpuNodeTaints.*'dedicated' is not a taint"):
        validate_stack_config({"platform": "existing", "tier": "pro", "model": "x",
                               "gpuNodeTaints": ["dedicated"]}, {"kubeconfig"})


def test_provisioning_defaults():
    assert validate_stack_config({**GKE, "tier": "pro"}).effective_provisioning == "flex-start"
    assert validate_stack_config(GKE).effective_provisioning == "on-demand"


def test_read_pulumi_config_from_the_engine_keeps_secrets_secret():
    """The path __main__ takes: keys and secret keys as the engine sets them."""
    pulumi.runtime.set_mocks(RecordingMocks(ProgramRun()), project="dsdeploy", stack="onprem")
    pulumi.runtime.set_all_config(
        {"dsdeploy:platform": "existing", "dsdeploy:tier": "base", "dsdeploy:model": "r1-distill-qwen-7b",
         "dsdeploy:replicasMax": "2", "dsdeploy:storageClass": "nfs", "dsdeploy:gpuNodeLabels": '["gpu=yes"]', "dsdeploy:kubeconfig": KUBECONFIG,
         "aws:region": "us-east-1"},
        ["dsdeploy:kubeconfig"],
    )
    try:
        seen = {}

        @pulumi.runtime.test
        def program():
            cfg, secrets = read_pulumi_config()
            seen["cfg"] = cfg
            assert set(secrets) == {"kubeconfig"}

            async def is_secret() -> bool:
                return await secrets["kubeconfig"].is_secret()

            return pulumi.Output.from_input(is_secret()).apply(lambda flag: seen.update(secret=flag))

        program()
        assert seen["secret"] is True
        assert seen["cfg"].replicas_max == 2 and seen["cfg"].gpu_node_labels == {"gpu": "yes"}
    finally:
        pulumi.runtime.set_all_config({}, [])


def test_engine_config_errors_are_raised_before_resources():
    run = ProgramRun()
    with pytest.raises(StackConfigError, match="dsdeploy:platform: missing"):
        run_program({"tier": "base", "model": "x"}, {}, run=run)
    assert [r for r in run.resources if r.typ != "pulumi:pulumi:Stack"] == []


def test_main_reads_an_example_stack_and_exports_the_outputs():
    """infra/__main__.py end to end under mocks, fed the onprem example stack as the engine would."""
    import runpy

    from pulumi.runtime.settings import get_root_resource

    values, _ = read_stack_file(ROOT / "Pulumi.onprem.yaml")
    # The engine hands every value over as text; structured ones as JSON.
    engine_config = {f"dsdeploy:{key}": value if isinstance(value, str) else json.dumps(value)
                     for key, value in values.items()}
    engine_config["dsdeploy:kubeconfig"] = KUBECONFIG
    run = ProgramRun()
    pulumi.runtime.set_mocks(RecordingMocks(run), project="dsdeploy", stack="onprem")
    pulumi.runtime.set_all_config(engine_config, ["dsdeploy:kubeconfig"])
    try:

        @pulumi.runtime.test
        def program():
            runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")
            exported = get_root_resource().outputs
            assert {"routerEndpoint", "kubeconfig", "plan", "substitutions", "provisioning"} <= set(exported)
            return pulumi.Output.from_input(exported["plan"]).apply(
                lambda plan: run.outputs.update(plan=plan))

        program()
        assert run.outputs["plan"]["quantization"] == "awq-int4"
    finally:
        pulumi.runtime.set_all_config({}, [])


def test_gke_stack_without_a_project_is_refused_on_the_engine_path():
    pulumi.runtime.set_mocks(RecordingMocks(ProgramRun()), project="dsdeploy", stack="gke")
    pulumi.runtime.set_all_config({f"dsdeploy:{key}": value for key, value in GKE.items()}, [])
    try:
        with pytest.raises(StackConfigError, match=r"dsdeploy:gcpProject: missing.*pulumi config set gcp:project"):
            read_pulumi_config()
        pulumi.runtime.set_all_config({**{f"dsdeploy:{k}": v for k, v in GKE.items()}, "gcp:project": "p-1"}, [])
        cfg, _ = read_pulumi_config()
        assert cfg.platform == "gke"
    finally:
        pulumi.runtime.set_all_config({}, [])
