"""Stack config: Pulumi.yaml declarations, example stacks, the engine's config path, and user-facing errors."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest
import yaml
from pulumi_cli_config import TYPES, engine_text, merge_stack_config, project_errors
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
PROJECT_FILE = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
DECLARED = PROJECT_FILE["config"]
FIELDS = {field.alias or name: (name, field) for name, field in StackConfig.model_fields.items()}
GKE = {
    "platform": "gke",
    "tier": "base",
    "model": "r1-distill-qwen-7b",
    "region": "us-central1",
    "zone": "us-central1-a",
}
EKS = {"platform": "eks", "tier": "pro", "model": "r1-distill-llama-70b", "region": "us-east-1"}


def test_pulumi_yaml_is_a_valid_project_declaring_only_validated_keys():
    assert PROJECT_FILE["name"] == "dsdeploy" and PROJECT_FILE["main"] == "infra/"
    assert PROJECT_FILE["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    assert project_errors(PROJECT_FILE) == []
    assert set(DECLARED) <= set(FIELDS)
    for key, spec in DECLARED.items():
        assert spec["type"] in TYPES, key
        assert len(spec["description"]) > 20, key


def test_only_the_required_keys_are_declared_without_a_default():
    """The CLI requires every declared key without a default in every stack, so only required ones may lack it."""
    required = {key for key, (_, field) in FIELDS.items() if field.is_required()}
    assert required == {"platform", "tier", "model"}
    assert {key for key, spec in DECLARED.items() if "default" not in spec} == required


def test_declared_defaults_are_the_programs_defaults():
    for key, spec in DECLARED.items():
        if "default" not in spec:
            continue
        name, field = FIELDS[key]
        expected = field.get_default(call_default_factory=True)
        # The CLI hands the default over as text, as it does every value.
        cfg = validate_stack_config({**GKE, key: engine_text(spec["default"])})
        assert getattr(cfg, name) == expected, key
        assert expected is not None, key


def test_keys_without_a_fixed_default_and_secrets_are_undeclared_but_documented():
    """Declared without a default they would be required; secrets with a plain default fail the CLI's check."""
    undeclared = (set(FIELDS) | set(SECRET_KEYS)) - set(DECLARED)
    no_fixed_default = {
        key
        for key, (_, field) in FIELDS.items()
        if not field.is_required() and field.get_default(call_default_factory=True) is None
    }
    assert undeclared == no_fixed_default | set(SECRET_KEYS)
    project_text, docs = (ROOT / "Pulumi.yaml").read_text(), (ROOT / "docs" / "pulumi.md").read_text()
    for key in undeclared:
        assert f"#   {key} " in project_text, key
        assert f"`{key}`" in docs, key


def test_cli_rule_reproduced_refuses_a_declared_key_without_default():
    """The Pulumi.yaml shape that stopped every preview: typed (or untyped) keys without defaults."""
    project = {
        "name": "dsdeploy",
        "config": {
            "platform": {"type": "string"},
            "zone": {"description": "untyped, no default"},
            "deepseekApiKey": {"type": "string", "secret": True},
            "replicasMin": {"type": "integer", "default": 1},
        },
    }
    merged, errors = merge_stack_config(project, {"config": {"dsdeploy:platform": "gke"}}, "gke-pro")
    assert errors == ["Stack 'gke-pro' is missing configuration values 'deepseekApiKey' and 'zone'"]
    assert merged["dsdeploy:replicasMin"] == "1"
    project["config"]["deepseekApiKey"]["default"] = ""
    project["config"]["zone"]["default"] = "us-central1-a"
    _, errors = merge_stack_config(project, {"config": {"dsdeploy:platform": "gke"}}, "gke-pro")
    assert errors == ["Stack 'gke-pro' with configuration key 'deepseekApiKey' must be encrypted as it's secret"]


@pytest.mark.parametrize("path", EXAMPLE_STACKS, ids=lambda p: p.name)
def test_example_stack_passes_the_pulumi_cli_config_check(path):
    stack_name = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    merged, errors = merge_stack_config(PROJECT_FILE, yaml.safe_load(path.read_text()), stack_name)
    assert errors == []
    # What the program then reads (the stack's keys plus the applied defaults, as text) is the same config.
    values, _ = read_stack_file(path)
    needed = {key for key in SECRET_KEYS if f"pulumi config set --secret {key}" in path.read_text()}
    engine = {key.removeprefix("dsdeploy:"): text for key, text in merged.items() if key.startswith("dsdeploy:")}
    assert validate_stack_config(engine, needed) == validate_stack_config(values, needed)


def test_there_are_the_example_stacks():
    assert {path.name for path in EXAMPLE_STACKS} >= {
        "Pulumi.gke-base.yaml",
        "Pulumi.gke-pro.yaml",
        "Pulumi.eks-pro.yaml",
        "Pulumi.onprem.yaml",
        "Pulumi.gke-pro-r1.yaml",
    }


def test_the_gke_pro_example_serves_v4_flash_on_one_node():
    values, _ = read_stack_file(ROOT / "Pulumi.gke-pro.yaml")
    cfg = validate_stack_config(values, {"deepseekApiKey"})
    plan = plan_deployment(cfg.model, cfg.tier, max_nodes=cfg.max_nodes_per_replica)
    assert (plan.model_id, plan.nodes_per_replica, plan.tensor_parallel_size) == ("deepseek-ai/DeepSeek-V4-Flash", 1, 4)
    assert plan.machine("gke").machine_type == "a3-highgpu-4g" and plan.speculative_decoding == "mtp"


def test_the_multi_node_example_spans_three_pro_nodes():
    values, _ = read_stack_file(ROOT / "Pulumi.gke-pro-r1.yaml")
    cfg = validate_stack_config(values, {"deepseekApiKey"})
    plan = plan_deployment(cfg.model, cfg.tier, max_nodes=cfg.max_nodes_per_replica)
    assert (plan.model_id, plan.nodes_per_replica, plan.gpus_per_replica) == ("deepseek-ai/DeepSeek-R1", 3, 12)
    assert cfg.compact_placement and not cfg.lws_already_installed


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
    plan = plan_deployment(
        cfg.model, cfg.tier, quantization=cfg.quantization, context=cfg.context, max_nodes=cfg.max_nodes_per_replica
    )
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
        ({"provisioning": "capacity-block"}, r"dsdeploy:provisioning: 'capacity-block'.*on gke"),
        ({"capacityReservationId": "cr-0123456789abcdef0"}, r"dsdeploy:capacityReservationId: .*reservationName"),
        (
            {"gpuOperatorNfd": "false"},
            r"dsdeploy:gpuOperatorNfd: False is not valid; allowed: true \(the key "
            r"applies to platform existing only",
        ),
        ({"gpusAlreadyEnabled": "true"}, r"dsdeploy:gpusAlreadyEnabled: True.*allowed: false"),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(change, message):
    with pytest.raises(StackConfigError, match=message):
        validate_stack_config({**GKE, **change})


@pytest.mark.parametrize(
    "change,message",
    [
        ({"provisioning": "flex-start"}, r"dsdeploy:provisioning: 'flex-start'.*capacity-block on eks"),
        ({"provisioning": "reservation"}, r"dsdeploy:capacityReservationId: missing; allowed: the id \(cr-\.\.\.\)"),
        (
            {"provisioning": "capacity-block", "capacityReservationId": "cr-0123456789abcdef0"},
            r"dsdeploy:zone: missing; allowed: the Availability Zone of capacity reservation cr-0123456789abcdef0",
        ),
        (
            {"capacityReservationId": "cr-0123456789abcdef0", "zone": "us-east-1a"},
            r"dsdeploy:provisioning: missing; allowed: reservation \(On-Demand Capacity Reservation\) or capacity-block",
        ),
        (
            {"capacityReservationId": "reservation-1"},
            r"dsdeploy:capacityReservationId: 'reservation-1' is not valid; "
            r"allowed: an EC2 capacity reservation id such as cr-",
        ),
        ({"zone": "us-west-2a"}, r"dsdeploy:zone: 'us-west-2a'.*an Availability Zone of region us-east-1"),
        ({"reservationName": "r1"}, r"dsdeploy:reservationName: 'r1'.*capacityReservationId"),
    ],
)
def test_eks_capacity_settings_are_checked(change, message):
    with pytest.raises(StackConfigError, match=message):
        validate_stack_config({**EKS, **change})


def test_operator_options_are_refused_when_no_operator_is_installed():
    base = {"platform": "existing", "tier": "base", "model": "r1-distill-qwen-7b", "gpusAlreadyEnabled": True}
    with pytest.raises(StackConfigError, match=r"dsdeploy:gpuOperatorToolkit: False.*gpusAlreadyEnabled is true"):
        validate_stack_config({**base, "gpuOperatorToolkit": False}, {"kubeconfig"})
    cfg = validate_stack_config({**base, "gpusAlreadyEnabled": False, "gpuOperatorNfd": "false"}, {"kubeconfig"})
    assert cfg.gpu_operator_nfd is False and cfg.gpu_operator_toolkit is True


def test_config_errors_are_pulumi_run_errors():
    """The Python language host prints a RunError's message alone; any other exception gets
    "Program failed with an unhandled exception" and a traceback."""
    with pytest.raises(pulumi.RunError) as caught:
        validate_stack_config({**GKE, "tier": "gold"})
    assert isinstance(caught.value, StackConfigError)
    assert str(caught.value).startswith("dsdeploy:tier: 'gold' is not valid") and "\n" not in str(caught.value)


def test_existing_cluster_labels_and_taints_in_kubectl_syntax():
    cfg = validate_stack_config(
        {
            "platform": "existing",
            "tier": "pro",
            "model": "r1-distill-llama-70b",
            "gpuNodeLabels": '["nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3"]',
            "gpuNodeTaints": '["nvidia.com/gpu:NoSchedule", "team=ml:NoExecute"]',
        },
        {"kubeconfig"},
    )
    assert cfg.gpu_node_labels == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert [t.model_dump() for t in cfg.gpu_node_taints] == [
        {"key": "nvidia.com/gpu", "value": None, "effect": "NoSchedule"},
        {"key": "team", "value": "ml", "effect": "NoExecute"},
    ]
    with pytest.raises(StackConfigError, match=r"gpuNodeTaints.*'dedicated' is not a taint"):
        validate_stack_config(
            {"platform": "existing", "tier": "pro", "model": "x", "gpuNodeTaints": ["dedicated"]}, {"kubeconfig"}
        )


def test_provisioning_defaults():
    assert validate_stack_config({**GKE, "tier": "pro"}).effective_provisioning == "flex-start"
    assert validate_stack_config(GKE).effective_provisioning == "on-demand"


def test_read_pulumi_config_from_the_engine_keeps_secrets_secret():
    """The path __main__ takes: keys and secret keys as the engine sets them."""
    pulumi.runtime.set_mocks(RecordingMocks(ProgramRun()), project="dsdeploy", stack="onprem")
    pulumi.runtime.set_all_config(
        {
            "dsdeploy:platform": "existing",
            "dsdeploy:tier": "base",
            "dsdeploy:model": "r1-distill-qwen-7b",
            "dsdeploy:replicasMax": "2",
            "dsdeploy:storageClass": "nfs",
            "dsdeploy:gpuNodeLabels": '["gpu=yes"]',
            "dsdeploy:kubeconfig": KUBECONFIG,
            "aws:region": "us-east-1",
        },
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


def test_a_secret_set_in_plain_text_is_refused_without_showing_it():
    pulumi.runtime.set_mocks(RecordingMocks(ProgramRun()), project="dsdeploy", stack="onprem")
    pulumi.runtime.set_all_config(
        {
            "dsdeploy:platform": "existing",
            "dsdeploy:tier": "base",
            "dsdeploy:model": "r1-distill-qwen-7b",
            "dsdeploy:kubeconfig": KUBECONFIG,
        },
        [],
    )  # `pulumi config set kubeconfig ...` without --secret
    try:
        with pytest.raises(
            StackConfigError,
            match=r"dsdeploy:kubeconfig: is stored in plain text.*"
            r"pulumi config set --secret kubeconfig",
        ) as caught:
            read_pulumi_config()
        assert "apiVersion" not in str(caught.value)
    finally:
        pulumi.runtime.set_all_config({}, [])


def test_main_stops_a_bad_stack_with_a_run_error():
    """infra/__main__.py at the top level: the error Pulumi shows is the message alone."""
    import runpy

    pulumi.runtime.set_mocks(RecordingMocks(ProgramRun()), project="dsdeploy", stack="bad")
    pulumi.runtime.set_all_config({"dsdeploy:platform": "gke", "dsdeploy:tier": "gold", "dsdeploy:model": "x"}, [])
    try:
        with pytest.raises(pulumi.RunError, match=r"^dsdeploy:tier: 'gold' is not valid; allowed: 'base' or 'pro'"):
            runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")
    finally:
        pulumi.runtime.set_all_config({}, [])


def test_main_reads_an_example_stack_and_exports_the_outputs():
    """infra/__main__.py end to end under mocks, fed the onprem example stack as the CLI would."""
    import runpy

    from pulumi.runtime.settings import get_root_resource

    # The stack's keys plus Pulumi.yaml's defaults, as text (structured values as JSON).
    engine_config, errors = merge_stack_config(
        PROJECT_FILE, yaml.safe_load((ROOT / "Pulumi.onprem.yaml").read_text()), "onprem"
    )
    assert errors == []
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
            return pulumi.Output.from_input(exported["plan"]).apply(lambda plan: run.outputs.update(plan=plan))

        program()
        assert run.outputs["plan"]["quantization"] == "gptq-int4"
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
