"""A stack whose model no node holds (full R1 on pro) under mocks: node counts, placement, the LWS controller,
and the values it hands the chart rendered by helm and validated, the LeaderWorkerSet against its CRD."""

from __future__ import annotations

from pathlib import Path

import pytest
from pulumi_harness import ProgramRun, run_program
from pulumi_stacks import KUBECONFIG
from test_pulumi_chart_seam import helm_template

from infra.stack_config import StackConfigError
from tests.support.crd_schemas import validate_custom_resource
from tests.support.manifests import validate_manifest

CHART = "kubernetes:helm.sh/v4:Chart"
POOL = "gcp:container/nodePool:NodePool"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
PLACEMENT_GROUP = "aws:ec2/placementGroup:PlacementGroup"
GKE_R1 = {
    "platform": "gke",
    "tier": "pro",
    "model": "deepseek-r1",
    "region": "us-central1",
    "zone": "us-central1-a",
    "replicasMin": 1,
    "replicasMax": 2,
}
EKS_R1 = {
    "platform": "eks",
    "tier": "pro",
    "model": "deepseek-r1",
    "region": "us-east-1",
    "replicasMin": 1,
    "replicasMax": 3,
}
EXISTING_R1 = {
    "platform": "existing",
    "tier": "pro",
    "model": "deepseek-r1",
    "storageClass": "cephfs",
    "gpusAlreadyEnabled": True,
}

_RUNS: dict[str, ProgramRun] = {}


def run(name: str) -> ProgramRun:
    stacks = {"gke": (GKE_R1, {}), "eks": (EKS_R1, {}), "existing": (EXISTING_R1, {"kubeconfig": KUBECONFIG})}
    if name not in _RUNS:
        raw, secrets = stacks[name]
        _RUNS[name] = run_program(raw, secrets)
    return _RUNS[name]


def test_gke_pool_holds_three_nodes_per_replica_placed_compactly() -> None:
    r = run("gke")
    pool = r.one(POOL, "gke-gpu").inputs
    # flex-start (the gke pro default) starts at 0 nodes; 2 replicas x 3 nodes at most
    assert pool["autoscaling"]["maxNodeCount"] == 6 and pool["autoscaling"]["minNodeCount"] == 0
    assert pool["placementPolicy"] == {"type": "COMPACT"}
    assert pool["nodeConfig"]["guestAccelerators"][0]["count"] == 4
    assert r.outputs["plan"]["nodesPerReplica"] == 3 and r.outputs["plan"]["pipelineParallelSize"] == 3
    assert r.outputs["plan"]["gpusPerReplica"] == 12
    assert "spans 3 nodes" in " ".join(r.outputs["substitutions"])


def test_gke_cache_is_filestore_basic_ssd_at_its_minimum_size() -> None:
    r = run("gke")
    cluster = r.one("gcp:container/cluster:Cluster").inputs
    assert cluster["addonsConfig"]["gcpFilestoreCsiDriverConfig"] == {"enabled": True}
    storage = r.one("kubernetes:storage.k8s.io/v1:StorageClass").inputs
    assert storage["provisioner"] == "filestore.csi.storage.gke.io"
    assert storage["parameters"]["tier"] == "premium" and storage["parameters"]["network"] == "gke-net"
    values = r.one(CHART, "dsdeploy").inputs["values"]
    assert values["modelCache"] == {
        "size": "2560Gi",
        "airgapped": False,
        "storageClass": "dsdeploy-model-cache",
        "accessMode": "ReadWriteMany",
    }  # 826 GiB computed, Basic SSD's minimum wins


def test_the_lws_controller_comes_from_its_pinned_chart_before_the_app() -> None:
    r = run("gke")
    lws = r.one(CHART, "lws").inputs
    assert lws["chart"] == "oci://registry.k8s.io/lws/charts/lws" and lws["version"] == "0.10.0"
    assert lws["namespace"] == "lws-system" and "repositoryOpts" not in lws
    assert lws["values"]["image"]["manager"] == {
        "repository": "registry.k8s.io/lws/lws",
        "tag": "v0.10.0",
        "pullPolicy": "IfNotPresent",
    }
    assert "lws" in r.dependencies["dsdeploy"]  # the CRD exists before the LeaderWorkerSet
    assert r.one("kubernetes:core/v1:Namespace", "lws-ns").inputs["metadata"]["name"] == "lws-system"
    assert r.outputs["leaderWorkerSet"].startswith("LeaderWorkerSet controller v0.10.0")


def test_a_cluster_that_has_lws_and_no_compact_placement(tmp_path: Path) -> None:
    r = run_program({**GKE_R1, "lwsAlreadyInstalled": True, "compactPlacement": False})
    assert not [c for c in r.of_type(CHART) if c.name == "lws"]
    assert "placementPolicy" not in r.one(POOL, "gke-gpu").inputs
    assert "already installed" in r.outputs["leaderWorkerSet"]


def test_one_node_stacks_get_neither_lws_nor_placement() -> None:
    r = run_program({**GKE_R1, "model": "deepseek-r1-distill-llama-70b"})
    assert not [c for c in r.of_type(CHART) if c.name == "lws"]
    assert "placementPolicy" not in r.one(POOL, "gke-gpu").inputs
    assert r.outputs["leaderWorkerSet"].startswith("not needed")
    assert r.outputs["plan"]["nodesPerReplica"] == 1


def test_eks_packs_two_pods_per_p5_in_one_cluster_placement_group() -> None:
    r = run("eks")
    group = r.one(NODE_GROUP, "eks-gpu").inputs
    # 1..3 replicas of 3 pods, two 4-GPU pods per p5.48xlarge: ceil(3/2) = 2 .. ceil(9/2) = 5 machines
    assert group["scalingConfig"] == {"minSize": 2, "desiredSize": 2, "maxSize": 5}
    assert group["subnetIds"] == ["eks-network-private-0-id"]  # a cluster placement group is one zone
    placement = r.one(PLACEMENT_GROUP, "eks-gpu-placement").inputs
    assert placement["strategy"] == "cluster"
    template = r.one(LAUNCH_TEMPLATE, "eks-gpu").inputs
    assert template["placement"] == {"groupName": "eks-gpu-placement"}
    assert "networkInterfaces" not in template  # no EFA (docs/pulumi.md says why)
    assert r.one("aws:efs/fileSystem:FileSystem").inputs["throughputMode"] == "elastic"
    assert r.one(CHART, "dsdeploy").inputs["values"]["modelCache"]["accessMode"] == "ReadWriteMany"
    assert r.one(CHART, "lws").inputs["version"] == "0.10.0"


def test_eks_reserved_capacity_gets_no_placement_group() -> None:
    r = run_program(
        {**EKS_R1, "provisioning": "reservation", "capacityReservationId": "cr-0123456789abcdef0", "zone": "us-east-1b"}
    )
    assert not r.of_type(PLACEMENT_GROUP)
    assert "placement" not in r.one(LAUNCH_TEMPLATE, "eks-gpu").inputs


def test_existing_cluster_needs_a_shared_storage_class() -> None:
    with pytest.raises(
        StackConfigError,
        match=r"^dsdeploy:storageClass: missing; allowed: a ReadWriteMany "
        r"StorageClass.*spans 3 nodes",
    ):
        run_program({k: v for k, v in EXISTING_R1.items() if k != "storageClass"}, {"kubeconfig": KUBECONFIG})
    r = run("existing")
    assert r.one(CHART, "lws").inputs["version"] == "0.10.0"
    assert r.one(CHART, "dsdeploy").inputs["values"]["modelCache"]["storageClass"] == "cephfs"


def test_max_nodes_per_replica_one_refuses_the_stack() -> None:
    with pytest.raises(StackConfigError, match=r"planner refuses this stack.*--max-nodes 3"):
        run_program({**GKE_R1, "maxNodesPerReplica": 1})
    with pytest.raises(StackConfigError, match=r"dsdeploy:maxNodesPerReplica: 5 is not valid"):
        run_program({**GKE_R1, "maxNodesPerReplica": 5})


@pytest.mark.parametrize("name", ["gke", "eks", "existing"])
def test_the_values_handed_to_the_chart_render_a_valid_leaderworkerset(name: str, tmp_path: Path) -> None:
    chart = run(name).one(CHART, "dsdeploy").inputs
    docs = helm_template(chart, chart["values"], tmp_path / "values.yaml")
    [lws] = [d for d in docs if d["kind"] == "LeaderWorkerSet"]
    validate_custom_resource(lws)
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 3
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    assert leader["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4
    expected = {
        "gke": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb", "dsdeploy.io/gpu-tier": "pro"},
        "eks": {"dsdeploy.io/gpu-tier": "pro", "dsdeploy.io/gpu": "true"},
        "existing": {"dsdeploy.io/gpu-tier": "pro"},
    }[name]
    assert leader["nodeSelector"] == expected
    for doc in docs:  # built-in kinds against Kubernetes' schemas, custom resources against their CRDs
        validate_manifest(doc)
