"""EKS under mocks: GPU node placement and root disk, capacity reservations, storage drivers on Pod Identity."""

from __future__ import annotations

import json

import pytest
from pulumi_harness import ProgramRun, run_program
from pulumi_stacks import R1_70B, stack_run

from infra.stack_config import StackConfigError

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
ASSOCIATION = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
ROLE = "aws:iam/role:Role"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
EBS_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
EFS_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEFSCSIDriverPolicy"
RESERVATION = "cr-0123456789abcdef0"


def subnet_zone(run: ProgramRun, subnet_id: str) -> str:
    return run.one("aws:ec2/subnet:Subnet", subnet_id.removesuffix("-id")).inputs["availabilityZone"]


@pytest.mark.parametrize("tier", ["base", "pro"])
def test_gpu_nodes_boot_from_a_200_gib_gp3_root_volume(tier):
    run = stack_run("eks", tier)
    group = run.one(NODE_GROUP, "eks-gpu").inputs
    assert "diskSize" not in group  # a node group with a launch template may not set it
    assert group["launchTemplate"] == {"id": "eks-gpu-id", "version": "1"}
    template = run.one(LAUNCH_TEMPLATE, "eks-gpu").inputs
    assert template["blockDeviceMappings"] == [
        {
            "deviceName": "/dev/xvda",
            "ebs": {"volumeSize": 200, "volumeType": "gp3", "encrypted": "true", "deleteOnTermination": "true"},
        }
    ]
    assert template["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpTokens": "required",
        "httpPutResponseHopLimit": 2,
    }
    assert "capacityReservationSpecification" not in template and "instanceMarketOptions" not in template
    assert run.one(NODE_GROUP, "eks-system").inputs["diskSize"] == 50


def test_single_replica_gpu_nodes_and_their_ebs_cache_share_one_zone():
    """EBS is zonal and ReadWriteOnce: a GPU node in another zone could never mount the cache."""
    run = stack_run("eks", "base")  # replicasMax 1: EBS
    group = run.one(NODE_GROUP, "eks-gpu").inputs
    assert group["subnetIds"] == ["eks-network-private-0-id"]
    assert subnet_zone(run, group["subnetIds"][0]) == "us-east-1a"
    storage = run.one("kubernetes:storage.k8s.io/v1:StorageClass").inputs
    assert storage["provisioner"] == "ebs.csi.aws.com"
    assert storage["allowedTopologies"] == [
        {"matchLabelExpressions": [{"key": "topology.ebs.csi.aws.com/zone", "values": ["us-east-1a"]}]}
    ]
    assert storage["volumeBindingMode"] == "WaitForFirstConsumer"


def test_several_replicas_on_a_shared_efs_cache_may_use_both_zones():
    run = stack_run("eks", "pro")  # replicas 2..4: EFS, regional
    group = run.one(NODE_GROUP, "eks-gpu").inputs
    assert group["subnetIds"] == ["eks-network-private-0-id", "eks-network-private-1-id"]
    assert "allowedTopologies" not in run.one("kubernetes:storage.k8s.io/v1:StorageClass").inputs


def test_storage_drivers_get_aws_permissions_through_pod_identity_not_the_node_role():
    run = stack_run("eks", "pro")  # EBS and EFS
    roles = {role.name: role.inputs for role in run.of_type(ROLE)}
    attachments = run.of_type(ATTACHMENT)
    on_node_role = {a.inputs["policyArn"] for a in attachments if a.inputs["role"] == "eks-node-role"}
    assert on_node_role and not on_node_role & {EBS_POLICY, EFS_POLICY}
    associations = {(a.inputs["namespace"], a.inputs["serviceAccount"]): a.inputs for a in run.of_type(ASSOCIATION)}
    assert set(associations) == {
        ("kube-system", "ebs-csi-controller-sa"),
        ("kube-system", "efs-csi-controller-sa"),
        ("kube-system", "efs-csi-node-sa"),
    }
    for (_, account), association in associations.items():
        driver = account.split("-")[0]  # ebs or efs
        role_name = association["roleArn"].rsplit("/", 1)[-1]
        assert role_name.endswith(f"{driver}-csi-identity-role"), role_name
        trust = json.loads(roles[role_name]["assumeRolePolicy"])["Statement"]
        assert trust == [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
            }
        ]
        policies = {a.inputs["policyArn"] for a in attachments if a.inputs["role"] == role_name}
        assert policies == {EBS_POLICY if driver == "ebs" else EFS_POLICY}
    agent = run.one("aws:eks/addon:Addon", "pod-identity-agent").inputs
    assert agent["addonName"] == "eks-pod-identity-agent"
    # The webhook gives a pod credentials when it starts: agent and association come before the driver.
    assert {
        "eks-pod-identity-agent",
        "eks-ebs-csi-identity-ebs-csi-controller-sa",
        "eks-ebs-csi-identity-policy",
    } <= set(run.dependencies["eks-ebs-csi"])
    assert {"eks-pod-identity-agent", "eks-shared-cache-efs-csi-identity-efs-csi-node-sa"} <= set(
        run.dependencies["eks-shared-cache-efs-csi"]
    )


EKS_PRO = {"platform": "eks", "tier": "pro", "model": R1_70B, "region": "us-east-1", "replicasMin": 2, "replicasMax": 2}


def test_capacity_block_for_ml():
    run = run_program(
        {**EKS_PRO, "provisioning": "capacity-block", "capacityReservationId": RESERVATION, "zone": "us-east-1c"}
    )
    template = run.one(LAUNCH_TEMPLATE, "eks-gpu").inputs
    assert template["capacityReservationSpecification"] == {
        "capacityReservationTarget": {"capacityReservationId": RESERVATION}
    }
    assert template["instanceMarketOptions"] == {"marketType": "capacity-block"}
    assert template["instanceType"] == "p5.48xlarge"
    group = run.one(NODE_GROUP, "eks-gpu").inputs
    assert group["capacityType"] == "CAPACITY_BLOCK" and "instanceTypes" not in group
    # The reservation's zone: the GPU subnet is there, whatever order the region lists its zones in.
    assert group["subnetIds"] == ["eks-network-private-0-id"]
    assert subnet_zone(run, group["subnetIds"][0]) == "us-east-1c"
    assert f"Capacity Block {RESERVATION} in us-east-1c" in run.outputs["provisioning"]["note"]


def test_on_demand_capacity_reservation():
    run = run_program(
        {
            **EKS_PRO,
            "replicasMax": 4,
            "provisioning": "reservation",
            "capacityReservationId": RESERVATION,
            "zone": "us-east-1b",
        }
    )
    template = run.one(LAUNCH_TEMPLATE, "eks-gpu").inputs
    assert template["capacityReservationSpecification"] == {
        "capacityReservationTarget": {"capacityReservationId": RESERVATION}
    }
    assert "instanceMarketOptions" not in template and "instanceType" not in template
    group = run.one(NODE_GROUP, "eks-gpu").inputs
    assert group["capacityType"] == "ON_DEMAND" and group["instanceTypes"] == ["p5.48xlarge"]
    assert group["subnetIds"] == ["eks-network-private-0-id"]  # one zone even with EFS: the reservation's
    assert subnet_zone(run, group["subnetIds"][0]) == "us-east-1b"


def test_a_zone_the_region_lacks_is_one_clear_error():
    with pytest.raises(
        StackConfigError,
        match=r"^dsdeploy:zone: 'us-east-1z' is not valid; allowed: an available "
        r"zone of the region: us-east-1a, us-east-1b, us-east-1c",
    ):
        run_program({**EKS_PRO, "zone": "us-east-1z"})


BASE_7B = {"platform": "eks", "tier": "base", "model": "deepseek-r1-distill-qwen-7b", "region": "us-east-1"}


def test_instance_type_pins_the_gpu_node_group_shape():
    run = run_program({**BASE_7B, "instanceType": "p5.4xlarge"})
    group = run.one(NODE_GROUP, "eks-gpu").inputs
    assert group["instanceTypes"] == ["p5.4xlarge"]
    assert run.outputs["gpuNodes"]["labels"]["dsdeploy.io/gpu-tier"] == "base"
    [substitution] = run.outputs["substitutions"]
    assert "Pinned by the stack (p5.4xlarge" in substitution and "H100-80GB" in substitution
    # the quota note follows the shape's family (P instances), not the tier's default shape
    assert (
        '"Running On-Demand P instances" vCPU quota must cover 16 vCPUs per p5.4xlarge node'
        in (run.outputs["provisioning"]["note"])
    )
    default = run_program(BASE_7B).one(NODE_GROUP, "eks-gpu").inputs
    assert default["instanceTypes"] == ["g6e.2xlarge"]  # unpinned: the cheapest shape that holds the plan


@pytest.mark.parametrize(
    "raw,message",
    [
        (
            {**BASE_7B, "instanceType": "g6e.xlarge"},
            r"^dsdeploy:instanceType: 'g6e\.xlarge' is not valid: machine type 'g6e\.xlarge' does not hold this plan: its "
            r"3,920m allocatable CPU cannot hold the engine pod's request of 4,000m; allowed for this plan: p4d\.24xlarge, "
            r"g6e\.2xlarge",
        ),
        ({**BASE_7B, "instanceType": "m5.large"}, r"^dsdeploy:instanceType: 'm5\.large' is not valid: .*not offered"),
        (
            {**BASE_7B, "model": "deepseek-r1-distill-qwen-32b", "instanceType": "p5.4xlarge"},
            r"^dsdeploy:instanceType: .*spans 3 nodes of the tier's own shape",
        ),
        (
            {
                "platform": "gke",
                "tier": "base",
                "model": "deepseek-r1-distill-qwen-7b",
                "region": "us-central1",
                "zone": "us-central1-a",
                "instanceType": "a2-highgpu-1g",
            },
            r"^dsdeploy:instanceType: .*unset on gke",
        ),
    ],
)
def test_a_pinned_instance_type_that_does_not_hold_the_plan_is_refused_before_any_resource(raw, message):
    run = ProgramRun()
    with pytest.raises(StackConfigError, match=message):
        run_program(raw, run=run)
    assert [r.name for r in run.resources if r.typ != "pulumi:pulumi:Stack"] == []
