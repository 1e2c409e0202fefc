"""The Pulumi program under mocks: resources and arguments per platform x tier, secrets, ordering, bad configs."""

from __future__ import annotations

import json

import pulumi
import pytest
from pulumi_harness import ProgramRun, run_program
from pulumi_stacks import API_KEY, KUBECONFIG, STACKS, stack_run

from infra.catalog import load_catalog
from infra.planner import plan_deployment
from infra.stack_config import StackConfigError

CHART = "kubernetes:helm.sh/v4:Chart"
# The upstream chart versions whose values keys the program was checked against (change them together).
DEVICE_PLUGIN_VERSION = "0.18.2"
GPU_OPERATOR_VERSION = "v26.7.0"
NODE_POOL = "gcp:container/nodePool:NodePool"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}


def mapping(platform: str, tier: str):
    return load_catalog().tier(tier).machine_for(platform)


def planned_machine(platform: str, tier: str):
    """The machine the program's plan for the shared stack runs on (the cheapest shape that holds it)."""
    raw, _ = STACKS[(platform, tier)]
    return plan_deployment(raw["model"], tier, quantization=raw.get("quantization")).machine(platform)


def charts(run: ProgramRun) -> dict[str, dict]:
    return {r.name: r.inputs for r in run.of_type(CHART)}


@pytest.mark.parametrize("tier", ["base", "pro"])
def test_gke_gpu_pool_from_catalog(tier):
    run = stack_run("gke", tier)
    expected = mapping("gke", tier)
    pool = run.one(NODE_POOL, "gke-gpu").inputs
    config = pool["nodeConfig"]
    assert config["machineType"] == expected.machine_type
    [accelerator] = config["guestAccelerators"]
    assert accelerator["type"] == expected.accelerator_type
    assert accelerator["count"] == expected.accelerator_count
    assert accelerator["gpuDriverInstallationConfig"] == {"gpuDriverVersion": "LATEST"}
    assert config["taints"] == [GPU_TAINT]
    assert config["labels"]["dsdeploy.io/gpu-tier"] == tier
    assert not any(key.startswith("cloud.google.com/") for key in config["labels"])  # GKE sets those itself
    if expected.local_ssd_count:
        assert config["ephemeralStorageLocalSsdConfig"] == {"localSsdCount": expected.local_ssd_count}
    else:
        assert "ephemeralStorageLocalSsdConfig" not in config


def test_gke_base_is_on_demand_and_autoscales_between_replica_bounds():
    run = stack_run("gke", "base")
    pool = run.one(NODE_POOL, "gke-gpu").inputs
    assert pool["autoscaling"]["minNodeCount"] == 1 and pool["autoscaling"]["maxNodeCount"] == 2
    assert "spot" not in pool["nodeConfig"] and "flexStart" not in pool["nodeConfig"]
    assert run.outputs["provisioning"]["model"] == "on-demand"


def test_gke_pro_defaults_to_flex_start_and_says_so():
    run = stack_run("gke", "pro")
    pool = run.one(NODE_POOL, "gke-gpu").inputs
    assert pool["nodeConfig"]["flexStart"] is True
    assert pool["nodeConfig"]["reservationAffinity"] == {"consumeReservationType": "NO_RESERVATION"}
    assert pool["autoscaling"] == {"minNodeCount": 0, "maxNodeCount": 1, "locationPolicy": "ANY"}
    assert pool["management"]["autoRepair"] is False
    assert run.outputs["provisioning"]["model"] == "flex-start"
    assert "Flex-start" in run.outputs["provisioning"]["note"]


def test_gke_cluster_is_vpc_native_without_default_pool():
    for tier, protected in (("base", False), ("pro", True)):
        run = stack_run("gke", tier)
        cluster = run.one("gcp:container/cluster:Cluster").inputs
        assert cluster["removeDefaultNodePool"] is True
        assert cluster["networkingMode"] == "VPC_NATIVE"
        assert cluster["ipAllocationPolicy"] == {
            "clusterSecondaryRangeName": "pods",
            "servicesSecondaryRangeName": "services",
        }
        assert cluster["deletionProtection"] is protected
        system = run.one(NODE_POOL, "gke-system").inputs
        assert system["nodeConfig"]["machineType"] == "e2-standard-4"
        assert "guestAccelerators" not in system["nodeConfig"]


@pytest.mark.parametrize("tier", ["base", "pro"])
def test_gke_installs_no_device_plugin(tier):
    run = stack_run("gke", tier)
    assert set(charts(run)) == {"dsdeploy"}
    assert not run.of_type("kubernetes:apps/v1:DaemonSet")
    assert run.outputs["gpuEnablement"].startswith("GKE-managed")


@pytest.mark.parametrize("tier", ["base", "pro"])
def test_eks_gpu_node_group(tier):
    run = stack_run("eks", tier)
    expected = planned_machine("eks", tier)
    # base: a one-GPU 7B replica runs on the cheapest single-GPU shape, not a whole 8-GPU p4d.24xlarge
    assert expected.machine_type == {"base": "g6e.2xlarge", "pro": "p5.48xlarge"}[tier]
    group = run.one(NODE_GROUP, "eks-gpu").inputs
    assert group["amiType"] == "AL2023_x86_64_NVIDIA"
    assert group["instanceTypes"] == [expected.machine_type]
    assert group["taints"] == [GPU_TAINT]
    assert group["labels"]["dsdeploy.io/gpu-tier"] == tier
    system = run.one(NODE_GROUP, "eks-system").inputs
    assert system["amiType"] == "AL2023_x86_64_STANDARD" and "taints" not in system
    assert run.one("aws:eks/addon:Addon", "ebs-csi").inputs["addonName"] == "aws-ebs-csi-driver"
    assert run.outputs["substitutions"] == [expected.substitution]


def test_eks_capacity_and_bounds():
    base = run_node_group("base")
    assert base["capacityType"] == "SPOT"
    assert base["scalingConfig"] == {"minSize": 1, "desiredSize": 1, "maxSize": 1}
    pro = run_node_group("pro")  # replicas 2..4 at two pro replicas per p5.48xlarge
    assert pro["capacityType"] == "ON_DEMAND"
    assert pro["scalingConfig"] == {"minSize": 1, "desiredSize": 1, "maxSize": 2}


def run_node_group(tier: str) -> dict:
    return stack_run("eks", tier).one(NODE_GROUP, "eks-gpu").inputs


@pytest.mark.parametrize("tier", ["base", "pro"])
def test_eks_device_plugin_schedules_on_gpu_nodes(tier):
    run = stack_run("eks", tier)
    plugin = charts(run)["nvidia-device-plugin"]
    assert plugin["version"] == DEVICE_PLUGIN_VERSION  # pinned: the release whose values were checked
    group_labels = run.one(NODE_GROUP, "eks-gpu").inputs["labels"]
    [term] = plugin["values"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    for expression in term["matchExpressions"]:
        # Every requirement is a label the node group itself sets (no NFD/GFD labels on bare EKS nodes).
        assert expression["operator"] == "In"
        assert group_labels.get(expression["key"]) in expression["values"], expression
    tolerated = {(t["key"], t.get("value"), t["effect"]) for t in plugin["values"]["tolerations"] if "effect" in t}
    assert ("nvidia.com/gpu", "present", "NoSchedule") in tolerated
    assert plugin["values"]["gfd"] == {"enabled": False} and plugin["values"]["nfd"] == {"enabled": False}


@pytest.mark.parametrize(
    "platform,tier,provisioner",
    [
        ("gke", "base", "filestore.csi.storage.gke.io"),
        ("gke", "pro", "pd.csi.storage.gke.io"),
        ("eks", "base", "ebs.csi.aws.com"),
        ("eks", "pro", "efs.csi.aws.com"),
    ],
)
def test_model_cache_storage_fits_the_replica_count(platform, tier, provisioner):
    """One replica: SSD block storage. Several (replicasMax > 1): a shared file system the cloud layer made."""
    run = stack_run(platform, tier)
    storage = run.one("kubernetes:storage.k8s.io/v1:StorageClass").inputs
    assert storage["provisioner"] == provisioner
    if provisioner == "ebs.csi.aws.com":
        assert storage["parameters"]["type"] == "gp3"
    if provisioner == "efs.csi.aws.com":
        efs = run.one("aws:efs/fileSystem:FileSystem").inputs
        assert efs["encrypted"] is True
        assert storage["parameters"]["fileSystemId"] == "eks-shared-cache-fs-id"
        assert len(run.of_type("aws:efs/mountTarget:MountTarget")) == 2
        assert run.one("aws:eks/addon:Addon", "efs-csi").inputs["addonName"] == "aws-efs-csi-driver"
        assert "eks-shared-cache-efs-csi" in run.dependencies["model-cache-storage-class"]
    if provisioner.startswith("filestore"):
        addons = run.one("gcp:container/cluster:Cluster").inputs["addonsConfig"]
        assert addons["gcpFilestoreCsiDriverConfig"] == {"enabled": True}
        assert storage["parameters"]["network"] == "gke-net"
    if platform == "gke" and tier == "pro":
        assert not run.of_type("aws:efs/fileSystem:FileSystem")


def test_existing_creates_nothing_outside_the_cluster_and_installs_the_operator():
    run = stack_run("existing", "base")
    assert not [r for r in run.resources if r.typ.startswith(("gcp:", "aws:"))]
    operator = charts(run)["gpu-operator"]
    assert operator["version"] == GPU_OPERATOR_VERSION
    values = operator["values"]
    assert values["driver"] == {"enabled": True} and values["toolkit"] == {"enabled": True}
    custom = {"key": "gpu.example.com/dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"}
    assert custom in values["daemonsets"]["tolerations"]
    # NFD labels the GPU nodes (the operator deploys nothing on unlabelled nodes): its worker must get past
    # the same taints, and keep the chart's defaults, which a list value replaces.
    assert values["nfd"] == {"enabled": True}
    worker = values["node-feature-discovery"]["worker"]["tolerations"]
    assert custom in worker
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in worker
    assert {
        "key": "node-role.kubernetes.io/control-plane",
        "operator": "Equal",
        "value": "",
        "effect": "NoSchedule",
    } in worker
    assert run.outputs["gpuEnablement"] == (
        f"NVIDIA GPU operator {GPU_OPERATOR_VERSION} with the driver, with the container toolkit, with NFD"
    )
    assert not run.of_type("kubernetes:storage.k8s.io/v1:StorageClass")  # the user's class is used


def test_gpu_operator_leaves_out_nfd_and_toolkit_the_cluster_already_runs():
    raw, secrets = STACKS[("existing", "base")]
    run = run_program(
        {**raw, "gpuOperatorNfd": "false", "gpuOperatorToolkit": False, "gpuOperatorDriver": False}, secrets
    )
    values = charts(run)["gpu-operator"]["values"]
    assert values["nfd"] == {"enabled": False} and "node-feature-discovery" not in values
    assert values["toolkit"] == {"enabled": False} and values["driver"] == {"enabled": False}
    assert values["devicePlugin"] == {"enabled": True}
    assert run.outputs["gpuEnablement"].endswith("without the driver, without the container toolkit, without NFD")


def test_existing_with_gpus_enabled_installs_no_operator():
    run = stack_run("existing", "pro")
    assert set(charts(run)) == {"dsdeploy"}
    assert "already enabled" in run.outputs["gpuEnablement"]


def test_chart_runs_on_the_cluster_provider_after_gpu_enablement(any_run):
    (platform, tier), run = any_run
    chart = run.one(CHART, "dsdeploy")
    assert f"::{platform}-k8s::" in chart.provider
    assert chart.inputs["chart"].endswith("charts/dsdeploy")
    after = set(run.dependencies["dsdeploy"])
    expected = {
        "gke": {"gke-gpu"},
        "eks": {"eks-gpu", "nvidia-device-plugin"},
        "existing": {"gpu-operator"} if tier == "base" else set(),
    }[platform]
    assert expected <= after, after
    if platform != "existing":
        assert "model-cache-storage-class" in after


def test_secrets_stay_secret(any_run):
    (platform, tier), run = any_run
    assert "kubeconfig" in run.secret_outputs
    provider = run.one("pulumi:providers:kubernetes")
    assert "kubeconfig" in provider.secret_paths
    public = json.dumps({k: v for k, v in run.outputs.items() if k not in run.secret_outputs})
    assert API_KEY not in public and "certificate-authority-data" not in public
    secrets = [r for r in run.of_type("kubernetes:core/v1:Secret") if "engine-api-key" not in r.name]
    engine_key = run.one("kubernetes:core/v1:Secret", "engine-api-key")  # on every stack: only router and engine
    assert (
        engine_key.inputs["metadata"]["name"] == charts(run)["dsdeploy"]["values"]["engine"]["apiKey"]["existingSecret"]
    )
    assert len(engine_key.inputs["stringData"]["api-key"]) >= 32 and "stringData" in engine_key.secret_paths
    if STACKS[(platform, tier)][1].get("deepseekApiKey"):
        [secret] = secrets
        assert secret.inputs["metadata"]["name"] == "dsdeploy-deepseek"
        assert secret.inputs["stringData"] == {"api-key": API_KEY}
        assert "stringData" in secret.secret_paths
        assert charts(run)["dsdeploy"]["values"]["router"]["cloud"]["enabled"] is True
    else:
        assert secrets == []
    for resource in run.resources:
        if resource.typ != "kubernetes:core/v1:Secret":
            assert API_KEY not in json.dumps(resource.inputs, default=str), resource.name
    if platform == "existing":
        assert provider.inputs["kubeconfig"] == KUBECONFIG


def test_outputs_summarise_the_plan(any_run):
    (platform, tier), run = any_run
    raw = STACKS[(platform, tier)][0]
    plan = plan_deployment(raw["model"], tier, quantization=raw.get("quantization"))
    assert run.outputs["plan"]["model"] == plan.served_model_name
    assert run.outputs["plan"]["quantization"] == plan.quantization
    assert run.outputs["plan"]["tensorParallelSize"] == plan.tensor_parallel_size
    assert run.outputs["plan"]["maxConcurrentSequences"] == plan.max_num_seqs
    assert run.outputs["routerEndpoint"] == "http://dsdeploy-router.dsdeploy.svc.cluster.local:8080"
    assert run.outputs["routerPortForward"] == "kubectl -n dsdeploy port-forward svc/dsdeploy-router 8080:8080"
    assert run.outputs["kubeconfig"].startswith("apiVersion: v1")


def test_both_router_outputs_name_the_charts_router_service(monkeypatch):
    """With a name override in the values, the endpoint and the port-forward follow the chart's naming."""
    import infra.app

    real = infra.app.chart_values
    monkeypatch.setattr(infra.app, "chart_values", lambda *a, **k: {**real(*a, **k), "fullnameOverride": "team-llm"})
    raw, secrets = STACKS[("existing", "pro")]
    run = run_program(raw, secrets)
    assert run.outputs["routerEndpoint"] == "http://team-llm-router.dsdeploy.svc.cluster.local:8080"
    assert run.outputs["routerPortForward"] == "kubectl -n dsdeploy port-forward svc/team-llm-router 8080:8080"


def test_chart_values_output_is_what_the_chart_got(any_run):
    _, run = any_run
    assert run.outputs["chartValues"] == charts(run)["dsdeploy"]["values"]
    assert "chartValues" not in run.secret_outputs


def test_a_checkpoint_key_serves_pre_quantized_weights_the_catalog_does_not_record():
    raw = {
        "platform": "existing",
        "tier": "base",
        "model": "deepseek-r1-distill-qwen-14b",
        "quantization": "awq-int4",
        "checkpoint": "example-org/DeepSeek-R1-Distill-Qwen-14B-AWQ",
    }
    run = run_program(raw, {"kubeconfig": KUBECONFIG})
    model = charts(run)["dsdeploy"]["values"]["model"]
    assert model["id"] == "example-org/DeepSeek-R1-Distill-Qwen-14B-AWQ"
    assert run.outputs["plan"]["quantization"] == "awq-int4"  # vLLM reads the method from the checkpoint's config


def test_pulumi_up_does_not_wait_for_the_app_unless_asked(any_run):
    """The download Job and the engine's startup outlast the provider's await timeouts; see docs/pulumi.md."""
    (platform, tier), run = any_run
    wait = STACKS[(platform, tier)][0].get("waitForApp", False)
    assert charts(run)["dsdeploy"]["skipAwait"] is (not wait)


BAD_CONFIGS = [
    ({"platform": "gke", "tier": "gold", "model": "r1-distill-qwen-7b"}, {}, r"dsdeploy:tier: 'gold'.*'base' or 'pro'"),
    ({"platform": "azure", "tier": "base", "model": "r1-distill-qwen-7b"}, {}, r"dsdeploy:platform: 'azure'.*'gke'"),
    (
        {"platform": "gke", "tier": "base", "model": "r1-distill-qwen-7b", "region": "us-central1"},
        {},
        r"dsdeploy:zone: missing",
    ),
    (
        {
            "platform": "eks",
            "tier": "pro",
            "model": "r1-distill-qwen-7b",
            "region": "us-east-1",
            "provisioning": "flex-start",
        },
        {},
        r"dsdeploy:provisioning: 'flex-start'.*on-demand, spot, reservation or capacity-block on eks",
    ),
    ({"platform": "existing", "tier": "base", "model": "r1-distill-qwen-7b"}, {}, r"dsdeploy:kubeconfig: missing"),
    (
        {"platform": "existing", "tier": "base", "model": "r1-distill-qwen-7b", "replicasMax": 3},
        {"kubeconfig": KUBECONFIG},
        r"dsdeploy:storageClass: missing; allowed: a ReadWriteMany StorageClass",
    ),
    (
        {"platform": "existing", "tier": "base", "model": "r1-distill-qwen-7b", "cloudFallback": "true"},
        {"kubeconfig": KUBECONFIG},
        r"dsdeploy:deepseekApiKey: missing.*--secret",
    ),
    (
        {"platform": "existing", "tier": "base", "model": "deepseek-r1", "quantization": "fp8"},
        {"kubeconfig": KUBECONFIG},
        r"does not fit tier base, not even across 4 nodes.*short by",
    ),
    (
        {"platform": "existing", "tier": "base", "model": "no-such-model"},
        {"kubeconfig": KUBECONFIG},
        r"planner refuses this stack.*no-such-model",
    ),
]


BAD_CHART_INPUTS = [
    (
        {"platform": "existing", "tier": "base", "model": "r1-distill-qwen-7b", "hfEndpoint": "ftp://mirror"},
        {"kubeconfig": KUBECONFIG},
        r"^dsdeploy:hfEndpoint: not valid: 'ftp://mirror' is not an http\(s\) URL",
    ),
    (
        {"platform": "existing", "tier": "base", "model": "r1-distill-qwen-7b", "quantization": "gguf-q4"},
        {"kubeconfig": KUBECONFIG},
        r"^dsdeploy:quantization/engineType: the chart cannot serve this plan: .*gguf-q4",
    ),
    (
        {"platform": "existing", "tier": "base", "model": "deepseek-r1-distill-qwen-14b", "quantization": "awq-int4"},
        {"kubeconfig": KUBECONFIG},
        r"no pre-quantized awq-int4 weights.*pulumi config set dsdeploy:checkpoint ORG/REPO",
    ),
    (
        {
            "platform": "existing",
            "tier": "base",
            "model": "deepseek-r1-distill-qwen-14b",
            "quantization": "awq-int4",
            "checkpoint": "not a repo id",
        },
        {"kubeconfig": KUBECONFIG},
        r"^dsdeploy:checkpoint: not valid",
    ),
]


@pytest.mark.parametrize("raw,secrets,message", BAD_CONFIGS + BAD_CHART_INPUTS)
def test_bad_config_fails_before_any_resource(raw, secrets, message):
    run = ProgramRun()
    with pytest.raises(StackConfigError, match=message) as caught:
        run_program(raw, secrets, run=run)
    assert [r.name for r in run.resources if r.typ != "pulumi:pulumi:Stack"] == []
    # A RunError: the Pulumi CLI shows this one line, not "unhandled exception" and a traceback.
    assert isinstance(caught.value, pulumi.RunError)
    assert str(caught.value).startswith("dsdeploy:") and "\n" not in str(caught.value)


def test_a_credential_given_as_the_hf_secret_name_is_refused_without_echoing_it():
    token = "hf_" + "x" * 34
    raw = {"platform": "existing", "tier": "base", "model": "r1-distill-qwen-7b", "hfTokenSecret": token}
    with pytest.raises(
        StackConfigError, match=r"dsdeploy:hfTokenSecret: not valid: this looks like a credential"
    ) as caught:
        run_program(raw, {"kubeconfig": KUBECONFIG})
    assert token not in str(caught.value)


def test_eks_resources_use_the_stack_region_provider():
    run = stack_run("eks", "pro")
    provider = run.one("pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    for resource in run.resources:
        if resource.typ.startswith("aws:"):
            assert "pulumi:providers:aws::aws::" in resource.provider, resource.name


def test_gke_workload_identity_only_with_a_project():
    pool = stack_run("gke", "base").one(NODE_POOL, "gke-gpu").inputs["nodeConfig"]
    assert "workloadMetadataConfig" not in pool  # no project known under mocks: no GKE_METADATA mode


@pytest.mark.parametrize(
    "platform,server,command",
    [
        ("gke", "https://203.0.113.10", "gke-gcloud-auth-plugin"),
        ("eks", "https://ABC.gr7.us-east-1.eks.amazonaws.com", "aws"),
    ],
)
def test_kubeconfig_reaches_the_new_cluster(platform, server, command):
    import yaml
    from pulumi_harness import CA_DATA

    config = yaml.safe_load(stack_run(platform, "pro").outputs["kubeconfig"])
    [cluster] = config["clusters"]
    assert cluster["cluster"] == {"server": server, "certificate-authority-data": CA_DATA}
    user = config["users"][0]["user"]["exec"]
    assert user["command"] == command
    if platform == "eks":
        assert user["args"][-4:] == ["--region", "us-east-1", "--output", "json"]
