"""EFS for a model cache shared by several engine pods on several EKS nodes (ReadWriteMany).

EBS volumes attach to one node; when the engine may scale past one replica the chart asks for a
ReadWriteMany claim, which on EKS means EFS: a file system, a mount target in each private subnet,
NFS allowed from the VPC, and the EFS CSI driver add-on, whose service accounts get the EFS policy
through EKS Pod Identity (the node role has none).
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_aws as aws

from infra.cloud.eks_identity import AddonIdentity

EFS_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEFSCSIDriverPolicy"
# The controller creates access points; the node plugin mounts (both call the EFS API).
EFS_CSI_SERVICE_ACCOUNTS = ("efs-csi-controller-sa", "efs-csi-node-sa")


class EksSharedCache(pulumi.ComponentResource):
    """An encrypted EFS file system reachable from the node subnets, and the EFS CSI add-on."""

    file_system_id: pulumi.Output[str]
    ready: list[pulumi.Resource]

    def __init__(
        self,
        name: str,
        *,
        cluster_name: pulumi.Input[str],
        vpc_id: pulumi.Input[str],
        vpc_cidr: str,
        subnet_ids: Sequence[pulumi.Input[str]],
        after: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("dsdeploy:cloud:EksSharedCache", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        file_system = aws.efs.FileSystem(
            f"{name}-fs",
            encrypted=True,
            performance_mode="generalPurpose",
            throughput_mode="elastic",
            tags={"Name": f"{name}-model-cache"},
            opts=child,
        )
        nfs = aws.ec2.SecurityGroup(
            f"{name}-nfs",
            vpc_id=vpc_id,
            description="NFS from the cluster VPC to the model cache",
            ingress=[{"protocol": "tcp", "from_port": 2049, "to_port": 2049, "cidr_blocks": [vpc_cidr]}],
            opts=child,
        )
        targets = [
            aws.efs.MountTarget(
                f"{name}-mount-{index}",
                file_system_id=file_system.id,
                subnet_id=subnet,
                security_groups=[nfs.id],
                opts=child,
            )
            for index, subnet in enumerate(subnet_ids)
        ]
        identity = AddonIdentity(
            f"{name}-efs-csi-identity",
            cluster_name=cluster_name,
            policy_arn=EFS_POLICY,
            service_accounts=EFS_CSI_SERVICE_ACCOUNTS,
            opts=child,
        )
        addon = aws.eks.Addon(
            f"{name}-efs-csi",
            cluster_name=cluster_name,
            addon_name="aws-efs-csi-driver",
            resolve_conflicts_on_create="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*after, *identity.ready]),
        )
        self.file_system_id = file_system.id
        self.ready = [addon, *targets]
        self.register_outputs({"fileSystemId": file_system.id})
