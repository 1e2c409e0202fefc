"""EKS Pod Identity for add-ons that call AWS APIs (EBS CSI, EFS CSI): one IAM role per add-on.

The role is assumed only by the add-on's own service accounts (an ``aws.eks.PodIdentityAssociation``
each), not by the node role, so other pods on the nodes cannot create, attach or delete volumes.
The ``eks-pod-identity-agent`` add-on hands the credentials to those pods; the associations must
exist before the add-on's pods start (the agent's webhook injects them at pod creation), so the
add-on depends on :attr:`AddonIdentity.ready`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pulumi
import pulumi_aws as aws

POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"
ADDON_NAMESPACE = "kube-system"


def pod_identity_trust_policy() -> str:
    """The trust policy EKS Pod Identity requires: the pods service may assume the role and tag the session."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": POD_IDENTITY_PRINCIPAL},
                    "Action": ["sts:AssumeRole", "sts:TagSession"],
                }
            ],
        }
    )


def pod_identity_agent(name: str, cluster_name: pulumi.Input[str], opts: pulumi.ResourceOptions) -> aws.eks.Addon:
    """The ``eks-pod-identity-agent`` add-on (a DaemonSet that serves the associations' credentials)."""
    return aws.eks.Addon(
        f"{name}-pod-identity-agent",
        cluster_name=cluster_name,
        addon_name="eks-pod-identity-agent",
        resolve_conflicts_on_create="OVERWRITE",
        opts=opts,
    )


class AddonIdentity(pulumi.ComponentResource):
    """An IAM role with one managed policy, associated with an add-on's service accounts in kube-system."""

    role: aws.iam.Role
    associations: list[aws.eks.PodIdentityAssociation]
    ready: list[pulumi.Resource]

    def __init__(
        self,
        name: str,
        *,
        cluster_name: pulumi.Input[str],
        policy_arn: str,
        service_accounts: Sequence[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("dsdeploy:cloud:AddonIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(f"{name}-role", assume_role_policy=pod_identity_trust_policy(), opts=child)
        policy = aws.iam.RolePolicyAttachment(f"{name}-policy", role=self.role.name, policy_arn=policy_arn, opts=child)
        self.associations = [
            aws.eks.PodIdentityAssociation(
                f"{name}-{account}",
                cluster_name=cluster_name,
                namespace=ADDON_NAMESPACE,
                service_account=account,
                role_arn=self.role.arn,
                opts=child,
            )
            for account in service_accounts
        ]
        self.ready = [policy, *self.associations]
        self.register_outputs({"roleArn": self.role.arn})
