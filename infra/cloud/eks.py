"""EKS from plain pulumi_aws resources: VPC, IAM, cluster, system and GPU managed node groups, EBS CSI.

Plain resources rather than the ``pulumi_eks`` component, so that every argument is visible
(and tested) under mocks. GPU nodes run the NVIDIA-accelerated AL2023 AMI, which carries the
driver and container toolkit but no device plugin: gpu_platform installs that. The GPU node
group's arguments, launch template and zone placement are in :mod:`infra.cloud.eks_gpu`; the
storage drivers get their AWS permissions through EKS Pod Identity (:mod:`infra.cloud.eks_identity`),
never through the node role.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.catalog import MachineMapping
from infra.cloud import GPU_TAINT, TIER_LABEL, GpuNodeFacts, exec_kubeconfig, shared_cache_needed
from infra.cloud.eks_gpu import (
    gpu_launch_template_args,
    gpu_node_group_args,
    gpu_placement_group,
    gpu_single_zone,
)
from infra.cloud.eks_identity import AddonIdentity, pod_identity_agent
from infra.cloud.eks_shared_cache import EksSharedCache
from infra.stack_config import StackConfig, StackConfigError

SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
SYSTEM_INSTANCE_TYPE = "m6i.large"
SYSTEM_DISK_GIB = 50  # router, metrics and add-on images; the 20 GiB default fills up
NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
)
EBS_CSI_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
EBS_CSI_SERVICE_ACCOUNTS = ("ebs-csi-controller-sa",)


def _assume_role(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


def _family(mapping: MachineMapping) -> str:
    return "P" if str(mapping.machine_type).startswith("p") else "G and VT"


def _provisioning_note(cfg: StackConfig, mapping: MachineMapping) -> str:
    provisioning = cfg.effective_provisioning
    if provisioning == "spot":
        return (
            f"GPU nodes are Spot instances and may be interrupted (quota: 'All {_family(mapping)} Spot "
            "Instance Requests')."
        )
    if provisioning == "reservation":
        return f"GPU nodes launch into On-Demand Capacity Reservation {cfg.capacity_reservation_id} in {cfg.zone}."
    if provisioning == "capacity-block":
        return (
            f"GPU nodes launch into Capacity Block {cfg.capacity_reservation_id} in {cfg.zone}; they "
            "exist only while the block is active."
        )
    return "GPU nodes are on-demand instances."


def ordered_zones(names: list[str], preferred: str | None) -> list[str]:
    """The region's zones with ``preferred`` (the GPU zone) first; an unknown zone is a config error."""
    if preferred is None:
        return list(names)
    if preferred not in names:
        raise StackConfigError(
            f"dsdeploy:zone: {preferred!r} is not valid; allowed: an available zone of the "
            f"region: {', '.join(names)}. Fix with `pulumi config set zone <value>`."
        )
    return [preferred, *(zone for zone in names if zone != preferred)]


class EksNetwork(pulumi.ComponentResource):
    """A VPC with two public subnets (load balancers, NAT) and two private subnets (nodes).

    Private subnet 0 lies in ``zone`` when given (the GPU nodes' zone), else in the region's first zone.
    """

    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    gpu_zone: str
    vpc_id: pulumi.Output[str]
    cidr = "10.0.0.0/16"

    def __init__(
        self, name: str, cluster_name: str, zone: str | None = None, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("dsdeploy:cloud:EksNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # A plain (blocking) invoke: a zone the region lacks stops the program with one clear error here.
        available = aws.get_availability_zones(state="available", opts=pulumi.InvokeOptions(parent=self))
        zones = ordered_zones(list(available.names), zone)
        self.gpu_zone = zones[0]
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=self.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": cluster_name},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, opts=child)
        public_rt = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=vpc.id, routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}], opts=child
        )
        owned = {f"kubernetes.io/cluster/{cluster_name}": "shared"}
        self.public_subnet_ids, self.private_subnet_ids = [], []
        nat = None
        for index in range(2):
            public = aws.ec2.Subnet(
                f"{name}-public-{index}",
                vpc_id=vpc.id,
                cidr_block=f"10.0.{index}.0/24",
                availability_zone=zones[index],
                map_public_ip_on_launch=True,
                tags={**owned, "kubernetes.io/role/elb": "1"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{index}", subnet_id=public.id, route_table_id=public_rt.id, opts=child
            )
            self.public_subnet_ids.append(public.id)
            if nat is None:
                eip = aws.ec2.Eip(f"{name}-nat", domain="vpc", opts=child)
                nat = aws.ec2.NatGateway(f"{name}-nat", subnet_id=public.id, allocation_id=eip.id, opts=child)
        assert nat is not None  # the loop's first pass made it
        private_rt = aws.ec2.RouteTable(
            f"{name}-private", vpc_id=vpc.id, routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}], opts=child
        )
        for index in range(2):
            private = aws.ec2.Subnet(
                f"{name}-private-{index}",
                vpc_id=vpc.id,
                cidr_block=f"10.0.{16 + index * 16}.0/20",
                availability_zone=zones[index],
                tags={**owned, "kubernetes.io/role/internal-elb": "1"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{index}", subnet_id=private.id, route_table_id=private_rt.id, opts=child
            )
            self.private_subnet_ids.append(private.id)
        self.vpc_id = vpc.id
        self.register_outputs({"vpcId": vpc.id})


class EksCluster(pulumi.ComponentResource):
    """Network, IAM roles, the EKS cluster, node groups, the EBS CSI add-on and the Kubernetes provider."""

    provider: k8s.Provider
    kubeconfig: pulumi.Output[str]
    gpu_facts: GpuNodeFacts
    gpu_nodes: aws.eks.NodeGroup
    gpu_zone: str
    block_cache_zone: str | None
    ebs_csi: aws.eks.Addon
    provisioning_note: str
    shared_cache: dict[str, pulumi.Input[str]] | None
    storage_ready: list[pulumi.Resource]
    min_cache_gib: None

    def __init__(
        self, name: str, cfg: StackConfig, mapping: MachineMapping, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("dsdeploy:cloud:EksCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        network = EksNetwork(f"{name}-network", cfg.cluster_name, zone=cfg.zone, opts=child)

        cluster_role = aws.iam.Role(
            f"{name}-cluster-role", assume_role_policy=_assume_role("eks.amazonaws.com"), opts=child
        )
        cluster_policy = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy",
            role=cluster_role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",
            opts=child,
        )
        node_role = aws.iam.Role(f"{name}-node-role", assume_role_policy=_assume_role("ec2.amazonaws.com"), opts=child)
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
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster_policy], protect=cfg.deletion_protection),
        )
        node_opts = pulumi.ResourceOptions(parent=self, depends_on=node_policies)
        system = aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=cluster.name,
            node_role_arn=node_role.arn,
            subnet_ids=network.private_subnet_ids,
            ami_type=SYSTEM_AMI_TYPE,
            instance_types=[SYSTEM_INSTANCE_TYPE],
            disk_size=SYSTEM_DISK_GIB,
            scaling_config={"min_size": 1, "desired_size": 2, "max_size": 3},
            labels={"dsdeploy.io/pool": "system"},
            opts=node_opts,
        )
        placement = None
        if gpu_placement_group(cfg, mapping):
            placement = aws.ec2.PlacementGroup(f"{name}-gpu-placement", strategy="cluster", opts=child)
        launch_template = aws.ec2.LaunchTemplate(
            f"{name}-gpu", opts=child, **gpu_launch_template_args(cfg, mapping, placement)
        )
        single_zone = gpu_single_zone(cfg, mapping)
        self.gpu_zone = network.gpu_zone
        self.block_cache_zone = None if shared_cache_needed(cfg.replicas_max, mapping) else network.gpu_zone
        self.gpu_nodes = aws.eks.NodeGroup(
            f"{name}-gpu",
            cluster_name=cluster.name,
            node_role_arn=node_role.arn,
            subnet_ids=network.private_subnet_ids[:1] if single_zone else network.private_subnet_ids,
            launch_template={"id": launch_template.id, "version": launch_template.latest_version.apply(str)},
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=node_policies, ignore_changes=["scalingConfig.desiredSize"]
            ),
            **gpu_node_group_args(cfg, mapping),
        )
        agent = pod_identity_agent(name, cluster.name, pulumi.ResourceOptions(parent=self, depends_on=[system]))
        ebs_identity = AddonIdentity(
            f"{name}-ebs-csi-identity",
            cluster_name=cluster.name,
            policy_arn=EBS_CSI_POLICY,
            service_accounts=EBS_CSI_SERVICE_ACCOUNTS,
            opts=child,
        )
        self.ebs_csi = aws.eks.Addon(
            f"{name}-ebs-csi",
            cluster_name=cluster.name,
            addon_name="aws-ebs-csi-driver",
            resolve_conflicts_on_create="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[system, agent, *ebs_identity.ready]),
        )
        self.storage_ready = [self.ebs_csi]
        self.min_cache_gib = None  # EBS and EFS have no minimum the chart must know
        self.shared_cache = None
        if shared_cache_needed(cfg.replicas_max, mapping):  # engine pods on several nodes share one cache
            efs = EksSharedCache(
                f"{name}-shared-cache",
                cluster_name=cluster.name,
                vpc_id=network.vpc_id,
                vpc_cidr=network.cidr,
                subnet_ids=network.private_subnet_ids,
                after=[system, agent],
                opts=child,
            )
            self.shared_cache = {"fileSystemId": efs.file_system_id}
            self.storage_ready += efs.ready
        region = cfg.region
        self.kubeconfig = exec_kubeconfig(
            cluster.name,
            cluster.endpoint,
            cluster.certificate_authority.data,
            lambda name: {
                "command": "aws",
                "args": ["eks", "get-token", "--cluster-name", name, "--region", region, "--output", "json"],
            },
        )
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, opts=child)
        self.gpu_facts = GpuNodeFacts(
            labels={TIER_LABEL: cfg.tier, "dsdeploy.io/gpu": "true"},
            taints=[dict(GPU_TAINT)],
            gpus_per_node=mapping.accelerator_count,
        )
        self.provisioning_note = " ".join(
            part for part in (_provisioning_note(cfg, mapping), mapping.provisioning_note) if part
        )
        self.register_outputs({"clusterName": cluster.name, "gpuNodeGroup": self.gpu_nodes.node_group_name})
