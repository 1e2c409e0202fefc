"""EKS from plain pulumi_aws resources: VPC, IAM, cluster, system and GPU managed node groups, EBS CSI.

Plain resources rather than the ``pulumi_eks`` component, so that every argument is visible
(and tested) under mocks. GPU nodes run the NVIDIA-accelerated AL2023 AMI, which carries the
driver and container toolkit but no device plugin: gpu_platform installs that.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.cloud import GPU_TAINT, TIER_LABEL, GpuNodeFacts, exec_kubeconfig, node_bounds
from infra.cloud.eks_shared_cache import EksSharedCache
from infra.stack_config import StackConfig

GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"
SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
SYSTEM_INSTANCE_TYPE = "m6i.large"
RESERVED_LABEL_PREFIXES = ("kubernetes.io/", "k8s.io/", "node.kubernetes.io/", "eks.amazonaws.com/")
NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
    # The EBS CSI controller uses the node role (no IRSA/OIDC provider to keep the graph small).
    "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy",
)


def _assume_role(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


def _family(mapping: Any) -> str:
    return "P" if str(mapping.machine_type).startswith("p") else "G and VT"


class EksNetwork(pulumi.ComponentResource):
    """A VPC with two public subnets (load balancers, NAT) and two private subnets (nodes)."""

    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    vpc_id: pulumi.Output[str]
    cidr = "10.0.0.0/16"

    def __init__(self, name: str, cluster_name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dsdeploy:cloud:EksNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        zones = aws.get_availability_zones_output(state="available", opts=pulumi.InvokeOutputOptions(parent=self)).names
        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=self.cidr, enable_dns_hostnames=True,
                          enable_dns_support=True, tags={"Name": cluster_name}, opts=child)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, opts=child)
        public_rt = aws.ec2.RouteTable(f"{name}-public", vpc_id=vpc.id,
                                       routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}], opts=child)
        owned = {f"kubernetes.io/cluster/{cluster_name}": "shared"}
        self.public_subnet_ids, self.private_subnet_ids = [], []
        nat = None
        for index in range(2):
            public = aws.ec2.Subnet(
                f"{name}-public-{index}", vpc_id=vpc.id, cidr_block=f"10.0.{index}.0/24",
                availability_zone=zones[index], map_public_ip_on_launch=True,
                tags={**owned, "kubernetes.io/role/elb": "1"}, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-public-{index}", subnet_id=public.id,
                                          route_table_id=public_rt.id, opts=child)
            self.public_subnet_ids.append(public.id)
            if nat is None:
                eip = aws.ec2.Eip(f"{name}-nat", domain="vpc", opts=child)
                nat = aws.ec2.NatGateway(f"{name}-nat", subnet_id=public.id, allocation_id=eip.id, opts=child)
        private_rt = aws.ec2.RouteTable(f"{name}-private", vpc_id=vpc.id,
                                        routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}], opts=child)
        for index in range(2):
            private = aws.ec2.Subnet(
                f"{name}-private-{index}", vpc_id=vpc.id, cidr_block=f"10.0.{16 + index * 16}.0/20",
                availability_zone=zones[index], tags={**owned, "kubernetes.io/role/internal-elb": "1"}, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-private-{index}", subnet_id=private.id,
                                          route_table_id=private_rt.id, opts=child)
            self.private_subnet_ids.append(private.id)
        self.vpc_id = vpc.id
        self.register_outputs({"vpcId": vpc.id})


def gpu_node_group_args(cfg: StackConfig, mapping: Any) -> dict[str, Any]:
    """The GPU managed node group's arguments from the catalog mapping and the stack config."""
    nodes_min, nodes_max = node_bounds(cfg.replicas_min, cfg.replicas_max, mapping.replicas_per_node)
    labels = {k: v for k, v in mapping.node_labels.items() if not k.startswith(RESERVED_LABEL_PREFIXES)}
    return {
        "ami_type": GPU_AMI_TYPE,
        "instance_types": [mapping.machine_type],
        "capacity_type": "SPOT" if cfg.effective_provisioning == "spot" else "ON_DEMAND",
        "scaling_config": {"min_size": nodes_min, "desired_size": max(nodes_min, 1), "max_size": nodes_max},
        "taints": [{"key": GPU_TAINT["key"], "value": GPU_TAINT["value"], "effect": "NO_SCHEDULE"}],
        "labels": {**labels, TIER_LABEL: cfg.tier, "dsdeploy.io/gpu": "true"},
        "disk_size": 200,
    }


class EksCluster(pulumi.ComponentResource):
    """Network, IAM roles, the EKS cluster, node groups, the EBS CSI add-on and the Kubernetes provider."""

    provider: k8s.Provider
    kubeconfig: pulumi.Output[str]
    gpu_facts: GpuNodeFacts
    gpu_node_group: aws.eks.NodeGroup
    ebs_csi: aws.eks.Addon
    provisioning_note: str
    shared_cache: dict[str, pulumi.Input[str]] | None
    storage_ready: list[pulumi.Resource]

    def __init__(self, name: str, cfg: StackConfig, mapping: Any, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dsdeploy:cloud:EksCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        network = EksNetwork(f"{name}-network", cfg.cluster_name, opts=child)

        cluster_role = aws.iam.Role(f"{name}-cluster-role", assume_role_policy=_assume_role("eks.amazonaws.com"),
                                    opts=child)
        cluster_policy = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy", role=cluster_role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy", opts=child)
        node_role = aws.iam.Role(f"{name}-node-role", assume_role_policy=_assume_role("ec2.amazonaws.com"),
                                 opts=child)
        node_policies = [
            aws.iam.RolePolicyAttachment(f"{name}-node-policy-{i}", role=node_role.name, policy_arn=arn, opts=child)
            for i, arn in enumerate(NODE_POLICIES)
        ]
        cluster = aws.eks.Cluster(
            f"{name}-cluster",
            name=cfg.cluster_name,
            role_arn=cluster_role.arn,
            version=cfg.kubernetes_version,
            vpc_config={
                "subnet_ids": network.private_subnet_ids + network.public_subnet_ids,
                "endpoint_public_access": True,
                "endpoint_private_access": True,
            },
            access_config={"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster_policy],
                                        protect=cfg.deletion_protection),
        )
        node_opts = pulumi.ResourceOptions(parent=self, depends_on=node_policies)
        system = aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=cluster.name,
            node_role_arn=node_role.arn,
            subnet_ids=network.private_subnet_ids,
            ami_type=SYSTEM_AMI_TYPE,
            instance_types=[SYSTEM_INSTANCE_TYPE],
            scaling_config={"min_size": 1, "desired_size": 2, "max_size": 3},
            labels={"dsdeploy.io/pool": "system"},
            opts=node_opts,
        )
        self.gpu_node_group = aws.eks.NodeGroup(
            f"{name}-gpu",
            cluster_name=cluster.name,
            node_role_arn=node_role.arn,
            subnet_ids=network.private_subnet_ids,
            opts=pulumi.ResourceOptions(parent=self, depends_on=node_policies,
                                        ignore_changes=["scalingConfig.desiredSize"]),
            **gpu_node_group_args(cfg, mapping),
        )
        self.ebs_csi = aws.eks.Addon(
            f"{name}-ebs-csi", cluster_name=cluster.name, addon_name="aws-ebs-csi-driver",
            resolve_conflicts_on_create="OVERWRITE", opts=pulumi.ResourceOptions(parent=self, depends_on=[system]))
        self.storage_ready = [self.ebs_csi]
        self.shared_cache = None
        if cfg.replicas_max > 1:  # several engine pods share one ReadWriteMany cache
            efs = EksSharedCache(f"{name}-shared-cache", cluster_name=cluster.name, vpc_id=network.vpc_id,
                                 vpc_cidr=network.cidr, subnet_ids=network.private_subnet_ids,
                                 node_role_name=node_role.name, after=[system], opts=child)
            self.shared_cache = {"fileSystemId": efs.file_system_id}
            self.storage_ready += efs.ready
        region = cfg.region
        self.kubeconfig = exec_kubeconfig(
            cluster.name, cluster.endpoint, cluster.certificate_authority.data,
            lambda name: {"command": "aws",
                          "args": ["eks", "get-token", "--cluster-name", name, "--region", region, "--output", "json"]},
        )
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, opts=child)
        args = gpu_node_group_args(cfg, mapping)
        self.gpu_facts = GpuNodeFacts(
            labels={TIER_LABEL: cfg.tier, "dsdeploy.io/gpu": "true"},
            taints=[dict(GPU_TAINT)],
            gpus_per_node=mapping.accelerator_count,
        )
        spot = args["capacity_type"] == "SPOT"
        self.provisioning_note = " ".join(part for part in (
            f"GPU nodes are Spot instances and may be interrupted (quota: 'All {_family(mapping)} Spot "
            "Instance Requests')."
            if spot else "GPU nodes are on-demand instances.",
            mapping.provisioning_note) if part)
        self.register_outputs({"clusterName": cluster.name, "gpuNodeGroup": self.gpu_node_group.node_group_name})
