"""GKE: a VPC-native Standard cluster with a small system pool and the tier's GPU pool.

GKE installs the NVIDIA driver (``gpu_driver_installation_config``) and runs its own device
plugin on GPU nodes, so nothing else advertises ``nvidia.com/gpu`` here (see gpu_platform).
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from infra.catalog import MachineMapping
from infra.catalog.schema import known
from infra.cloud import (
    GPU_TAINT,
    TIER_LABEL,
    GpuNodeFacts,
    exec_kubeconfig,
    node_bounds,
    shared_cache_needed,
    spans_nodes,
)
from infra.stack_config import StackConfig

SYSTEM_MACHINE_TYPE = "e2-standard-4"
# A multi-node replica's pods each read the whole checkpoint from the shared cache at every start: Filestore
# "premium" (Basic SSD) rather than "standard" (Basic HDD); its smallest instance is 2.5 TiB.
MULTI_NODE_FILESTORE_TIER = "premium"
MULTI_NODE_FILESTORE_MIN_GIB = 2560
RESERVED_LABEL_PREFIXES = ("cloud.google.com/", "kubernetes.io/", "k8s.io/", "node.kubernetes.io/")
PROVISIONING_NOTES = {
    "flex-start": "GPU nodes use Flex-start (Dynamic Workload Scheduler): they start when capacity is "
    "found and run at most 7 days before GKE replaces them.",
    "spot": "GPU nodes are Spot VMs: cheapest, but Compute Engine may preempt them at any time.",
    "reservation": "GPU nodes consume the named Compute Engine reservation only.",
    "on-demand": "GPU nodes are on-demand VMs; they need on-demand GPU quota and available capacity.",
}


def gpu_pool_placement(
    cfg: StackConfig, mapping: MachineMapping
) -> gcp.container.NodePoolPlacementPolicyArgsDict | None:
    """A compact placement policy for the GPU pool when a replica spans nodes (compactPlacement): the pool's
    nodes sit physically close in the zone, for the pipeline's traffic between the nodes of a group."""
    if spans_nodes(mapping) and cfg.compact_placement:
        return {"type": "COMPACT"}
    return None


def gpu_pool_node_config(
    cfg: StackConfig, mapping: MachineMapping, workload_identity: bool = True
) -> gcp.container.NodePoolNodeConfigArgsDict:
    """The GPU pool's ``node_config`` from the catalog mapping and the stack config."""
    provisioning = cfg.effective_provisioning
    labels = {k: v for k, v in mapping.node_labels.items() if not k.startswith(RESERVED_LABEL_PREFIXES)}
    labels[TIER_LABEL] = cfg.tier
    node_config: gcp.container.NodePoolNodeConfigArgsDict = {
        "machine_type": mapping.machine_type,
        "guest_accelerators": [
            {
                "type": known(mapping.accelerator_type, "accelerator_type"),  # every GKE mapping names it
                "count": mapping.accelerator_count,
                "gpu_driver_installation_config": {"gpu_driver_version": cfg.gpu_driver_version},
            }
        ],
        "taints": [{"key": GPU_TAINT["key"], "value": GPU_TAINT["value"], "effect": "NO_SCHEDULE"}],
        "labels": labels,
        "disk_size_gb": 200,
        "disk_type": "pd-ssd",
        "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
        "shielded_instance_config": {"enable_secure_boot": True, "enable_integrity_monitoring": True},
        "gvnic": {"enabled": True},  # A3 machine types need gVNIC; harmless elsewhere
    }
    if workload_identity:  # the metadata server mode needs Workload Identity on the cluster
        node_config["workload_metadata_config"] = {"mode": "GKE_METADATA"}
    if mapping.local_ssd_count:
        node_config["ephemeral_storage_local_ssd_config"] = {"local_ssd_count": mapping.local_ssd_count}
    if provisioning == "spot":
        node_config["spot"] = True
    elif provisioning == "flex-start":
        node_config["flex_start"] = True
        node_config["reservation_affinity"] = {"consume_reservation_type": "NO_RESERVATION"}
    elif provisioning == "reservation":
        assert cfg.reservation_name is not None  # stack_rules: provisioning=reservation needs reservationName
        node_config["reservation_affinity"] = {
            "consume_reservation_type": "SPECIFIC_RESERVATION",
            "key": "compute.googleapis.com/reservation-name",
            "values": [cfg.reservation_name],
        }
    return node_config


class GkeCluster(pulumi.ComponentResource):
    """Network, subnet (pods/services secondary ranges), cluster, system pool and GPU pool."""

    provider: k8s.Provider
    kubeconfig: pulumi.Output[str]
    gpu_facts: GpuNodeFacts
    gpu_nodes: gcp.container.NodePool
    provisioning_note: str
    shared_cache: dict[str, pulumi.Input[str]] | None
    block_cache_zone: None
    storage_ready: list[pulumi.Resource]
    min_cache_gib: int | None

    def __init__(
        self, name: str, cfg: StackConfig, mapping: MachineMapping, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("dsdeploy:cloud:GkeCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        project_id = cfg.gcp_project or gcp.config.project  # dsdeploy:gcpProject, else gcp:project
        project: dict[str, Any] = {"project": cfg.gcp_project} if cfg.gcp_project else {}

        network = gcp.compute.Network(
            f"{name}-net", auto_create_subnetworks=False, routing_mode="REGIONAL", opts=child, **project
        )
        subnet = gcp.compute.Subnetwork(
            f"{name}-subnet",
            network=network.id,
            region=cfg.region,
            ip_cidr_range="10.10.0.0/20",
            private_ip_google_access=True,
            secondary_ip_ranges=[
                {"range_name": "pods", "ip_cidr_range": "10.20.0.0/14"},
                {"range_name": "services", "ip_cidr_range": "10.24.0.0/20"},
            ],
            opts=child,
            **project,
        )
        cluster = gcp.container.Cluster(
            f"{name}-cluster",
            name=cfg.cluster_name,
            location=cfg.zone,
            network=network.id,
            subnetwork=subnet.id,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy={"cluster_secondary_range_name": "pods", "services_secondary_range_name": "services"},
            remove_default_node_pool=True,
            initial_node_count=1,
            deletion_protection=cfg.deletion_protection,
            release_channel={"channel": "REGULAR"},
            min_master_version=cfg.kubernetes_version,
            workload_identity_config=({"workload_pool": f"{project_id}.svc.id.goog"} if project_id else None),
            addons_config={
                "gce_persistent_disk_csi_driver_config": {"enabled": True},
                # Engine pods on several nodes share one ReadWriteMany model cache: Filestore.
                "gcp_filestore_csi_driver_config": {"enabled": shared_cache_needed(cfg.replicas_max, mapping)},
            },
            opts=child,
            **project,
        )
        gcp.container.NodePool(
            f"{name}-system",
            cluster=cluster.name,
            location=cfg.zone,
            node_count=1,
            node_config={
                "machine_type": SYSTEM_MACHINE_TYPE,
                "disk_size_gb": 100,
                "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                "labels": {"dsdeploy.io/pool": "system"},
            },
            management={"auto_repair": True, "auto_upgrade": True},
            opts=child,
            **project,
        )
        nodes_min, nodes_max = node_bounds(cfg.replicas_min, cfg.replicas_max, mapping)
        provisioning = cfg.effective_provisioning
        flex = provisioning == "flex-start"
        autoscaling: gcp.container.NodePoolAutoscalingArgsDict = {
            "min_node_count": 0 if flex else nodes_min,
            "max_node_count": nodes_max,
            "location_policy": "ANY" if flex else "BALANCED",
        }
        self.gpu_nodes = gcp.container.NodePool(
            f"{name}-gpu",
            cluster=cluster.name,
            location=cfg.zone,
            initial_node_count=0 if flex else nodes_min,
            autoscaling=autoscaling,
            management={"auto_repair": not flex, "auto_upgrade": True},
            node_config=gpu_pool_node_config(cfg, mapping, workload_identity=bool(project_id)),
            placement_policy=gpu_pool_placement(cfg, mapping),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["initialNodeCount"]),
            **project,
        )
        self.shared_cache = None
        if shared_cache_needed(cfg.replicas_max, mapping):
            self.shared_cache = {"network": network.name}
            if spans_nodes(mapping):  # every node of a group reads the whole checkpoint at each start
                self.shared_cache["tier"] = MULTI_NODE_FILESTORE_TIER
        # the program's own Filestore class (not a storageClass the user names) has a minimum instance size
        self.min_cache_gib = MULTI_NODE_FILESTORE_MIN_GIB if spans_nodes(mapping) and not cfg.storage_class else None
        self.block_cache_zone = None  # a zonal cluster: the disk and every node share cfg.zone
        self.storage_ready = []
        self.kubeconfig = exec_kubeconfig(
            cluster.name,
            cluster.endpoint.apply(lambda ip: f"https://{ip}"),
            cluster.master_auth.cluster_ca_certificate,
            lambda _name: {
                "command": "gke-gcloud-auth-plugin",
                "provideClusterInfo": True,
                "installHint": "gcloud components install gke-gcloud-auth-plugin",
            },
        )
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, opts=child)
        self.gpu_facts = GpuNodeFacts(
            labels={**mapping.node_labels, TIER_LABEL: cfg.tier},
            taints=[dict(GPU_TAINT)],
            gpus_per_node=mapping.accelerator_count,
        )
        self.provisioning_note = " ".join(
            part for part in (PROVISIONING_NOTES[provisioning], mapping.provisioning_note) if part
        )
        self.register_outputs({"clusterName": cluster.name, "gpuPool": self.gpu_nodes.name})
