"""Cloud layer: one ComponentResource per platform, each giving a Kubernetes provider and GPU node facts.

Every component is a :class:`ClusterLayer`: the same :class:`GpuNodeFacts` (what the chart must select and
tolerate), a ``provider`` (``pulumi_kubernetes.Provider``), the ``kubeconfig`` (a secret Output), the GPU node
resource the platform layer waits for, and what the model cache's storage needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pulumi
import yaml

if TYPE_CHECKING:
    import pulumi_kubernetes as k8s

    from infra.catalog import MachineMapping

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
TIER_LABEL = "dsdeploy.io/gpu-tier"


@dataclass(frozen=True)
class GpuNodeFacts:
    """Scheduling facts about the GPU nodes: the labels to select on and the taints to tolerate."""

    labels: dict[str, str]
    taints: list[dict[str, str]] = field(default_factory=list)
    gpus_per_node: int | None = None

    def tolerations(self) -> list[dict[str, str]]:
        """Kubernetes tolerations that match :attr:`taints` exactly."""
        result = []
        for taint in self.taints:
            toleration = {"key": taint["key"], "effect": taint["effect"]}
            if taint.get("value") is None:
                toleration["operator"] = "Exists"
            else:
                toleration.update(operator="Equal", value=taint["value"])
            result.append(toleration)
        return result


@runtime_checkable
class ClusterLayer(Protocol):
    """What the program takes from every cloud-layer component (GKE, EKS, an existing cluster).

    Read-only members, so that a component may declare a narrower type (``block_cache_zone: None``)."""

    @property
    def provider(self) -> k8s.Provider: ...
    @property
    def kubeconfig(self) -> pulumi.Output[str]: ...
    @property
    def gpu_facts(self) -> GpuNodeFacts: ...
    @property
    def gpu_nodes(self) -> pulumi.Resource | None:
        """The GPU node pool / node group the platform layer waits for (None: the user's own nodes)."""

    @property
    def provisioning_note(self) -> str: ...
    @property
    def shared_cache(self) -> dict[str, pulumi.Input[str]] | None:
        """What the ReadWriteMany model cache's StorageClass needs (None: no shared cache)."""

    @property
    def block_cache_zone(self) -> str | None:
        """The zone of a zonal (block) model cache volume, when it must be pinned."""

    @property
    def storage_ready(self) -> list[pulumi.Resource]: ...
    @property
    def min_cache_gib(self) -> int | None:
        """The smallest model cache volume the program's own storage class provisions (None: no minimum)."""


def node_bounds(replicas_min: int, replicas_max: int, mapping: MachineMapping) -> tuple[int, int]:
    """GPU node counts (min, max) that hold the engine replica bounds: a replica that spans N nodes takes N
    engine pods, packed ``mapping.pods_per_node`` to a machine (MachineMapping.nodes_for)."""
    return mapping.nodes_for(replicas_min), max(1, mapping.nodes_for(replicas_max))


def shared_cache_needed(replicas_max: int, mapping: MachineMapping) -> bool:
    """Whether engine pods on several nodes read the model cache: more replicas, or one replica over nodes."""
    return replicas_max > 1 or mapping.nodes_per_replica > 1


def spans_nodes(mapping: MachineMapping) -> bool:
    return mapping.nodes_per_replica > 1


def exec_kubeconfig(
    name: pulumi.Input[str],
    server: pulumi.Input[str],
    ca_data: pulumi.Input[str],
    user_exec: Callable[[str], dict[str, Any]],
) -> pulumi.Output[str]:
    """A kubeconfig (secret Output) whose user runs the cloud's token command; ``user_exec(cluster)`` gives it."""

    def render(args: list[str]) -> str:
        cluster, endpoint, ca = args
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster, "cluster": {"server": endpoint, "certificate-authority-data": ca}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
            "current-context": cluster,
            "users": [
                {
                    "name": cluster,
                    "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", **user_exec(cluster)}},
                }
            ],
        }
        return yaml.safe_dump(config, sort_keys=False)

    return pulumi.Output.secret(pulumi.Output.all(name, server, ca_data).apply(render))
