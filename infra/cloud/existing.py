"""An existing (on-prem or any) cluster: a Kubernetes provider from the kubeconfig secret, nothing else.

Nothing is created outside the cluster; the GPU nodes' labels and taints come from the stack
config (``gpuNodeLabels``, ``gpuNodeTaints``) because only the user knows them.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.catalog import MachineMapping
from infra.cloud import GpuNodeFacts
from infra.stack_config import StackConfig


class ExistingCluster(pulumi.ComponentResource):
    """A provider for the user's cluster and the facts about its GPU nodes."""

    provider: k8s.Provider
    kubeconfig: pulumi.Output[str]
    gpu_facts: GpuNodeFacts
    provisioning_note: str
    shared_cache: None
    block_cache_zone: None
    storage_ready: list[pulumi.Resource]
    gpu_nodes: None
    min_cache_gib: None

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        mapping: MachineMapping,
        kubeconfig: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("dsdeploy:cloud:ExistingCluster", name, None, opts)
        self.kubeconfig = pulumi.Output.secret(kubeconfig)
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=self.kubeconfig, opts=pulumi.ResourceOptions(parent=self)
        )
        self.gpu_facts = GpuNodeFacts(
            # Default: the catalog's label for the tier (dsdeploy.io/gpu-tier=<tier>), which the user sets.
            labels=dict(cfg.gpu_node_labels) or dict(mapping.node_labels),
            taints=[taint.model_dump() for taint in cfg.gpu_node_taints],
        )
        self.shared_cache = None  # the user's storageClass must be ReadWriteMany when replicasMax > 1
        self.block_cache_zone = None
        self.storage_ready = []
        self.gpu_nodes = None  # the user's GPU nodes exist already: nothing to wait for
        self.min_cache_gib = None
        self.provisioning_note = "Existing cluster: its GPU nodes are used as they are."
        self.register_outputs({})
