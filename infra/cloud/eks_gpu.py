"""The EKS GPU managed node group's arguments and its launch template.

The GPU node group always gets a launch template: it carries the root volume (200 GiB gp3: the vLLM
image unpacks to tens of GB and the NVIDIA AMI's 20 GiB default cannot hold it; a node group with a
launch template may not set ``disk_size``) and, when configured, the EC2 capacity reservation
(On-Demand Capacity Reservation, or a Capacity Block for ML, which also needs the capacity-block
market type and the instance type in the template, as AWS documents).

Placement: the GPU nodes sit in one subnet (one Availability Zone) when the model cache is an EBS
volume (``replicasMax`` 1: EBS is zonal and ReadWriteOnce, so a replacement node in another zone
could never mount it), when a capacity reservation is used (it holds instances in one zone), when
``zone`` is set, or when a replica spans nodes. Several one-node replicas share EFS (regional), and then
the group may use both zones.

A replica over several nodes (``compactPlacement``, default on) launches its nodes into an EC2 cluster
placement group: one zone, close together on the network. Not with a capacity reservation or Capacity
Block: the reservation decides where its instances run (AWS delivers Capacity Blocks in its EC2
UltraClusters), and an instance asked into a placement group the reservation is not in would not launch.

EFA is not configured (docs/pulumi.md): the layout sends only the pipeline's activations between nodes
(hidden size x 2 bytes per token per stage boundary, a few MB per step), which TCP over the node's ENA
carries; tensor parallelism, which needs the bandwidth, stays on each node's NVLink. NCCL would reach EFA
only through libfabric and the aws-ofi-nccl plugin inside the engine image, plus the EFA device plugin and
EFA interfaces in this launch template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infra.catalog import MachineMapping
from infra.cloud import GPU_TAINT, TIER_LABEL, node_bounds, spans_nodes
from infra.stack_config import StackConfig

if TYPE_CHECKING:
    import pulumi_aws as aws

GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"
GPU_ROOT_DISK_GIB = 200
ROOT_DEVICE = "/dev/xvda"  # the AL2023 AMIs' root device
RESERVED_LABEL_PREFIXES = ("kubernetes.io/", "k8s.io/", "node.kubernetes.io/", "eks.amazonaws.com/")
CAPACITY_TYPES = {"spot": "SPOT", "capacity-block": "CAPACITY_BLOCK"}


def gpu_single_zone(cfg: StackConfig, mapping: MachineMapping) -> bool:
    """Whether the GPU nodes must share one Availability Zone (see the module docstring)."""
    return cfg.replicas_max == 1 or bool(cfg.zone) or bool(cfg.capacity_reservation_id) or spans_nodes(mapping)


def gpu_placement_group(cfg: StackConfig, mapping: MachineMapping) -> bool:
    """Whether the GPU nodes launch into a cluster placement group (see the module docstring)."""
    return spans_nodes(mapping) and cfg.compact_placement and not cfg.capacity_reservation_id


def gpu_launch_template_args(
    cfg: StackConfig, mapping: MachineMapping, placement: aws.ec2.PlacementGroup | None = None
) -> dict[str, Any]:
    """The GPU launch template: root volume, the capacity reservation when one is configured, and the
    cluster placement group (an ``aws.ec2.PlacementGroup``) when the nodes of a replica must be close."""
    args: dict[str, Any] = {
        "description": "dsdeploy GPU nodes: root volume and capacity reservation",
        "update_default_version": True,
        # What EKS's own node group templates set: IMDSv2 only, and a hop limit that lets pods reach it.
        "metadata_options": {"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 2},
        "block_device_mappings": [
            {
                "device_name": ROOT_DEVICE,
                "ebs": {
                    "volume_size": GPU_ROOT_DISK_GIB,
                    "volume_type": "gp3",
                    "encrypted": "true",
                    "delete_on_termination": "true",
                },
            }
        ],
    }
    if cfg.capacity_reservation_id:
        args["capacity_reservation_specification"] = {
            "capacity_reservation_target": {"capacity_reservation_id": cfg.capacity_reservation_id}
        }
    if cfg.effective_provisioning == "capacity-block":
        args["instance_market_options"] = {"market_type": "capacity-block"}
        args["instance_type"] = mapping.machine_type
    if placement is not None:
        args["placement"] = {"group_name": placement.name}
    return args


def gpu_node_group_args(cfg: StackConfig, mapping: MachineMapping) -> dict[str, Any]:
    """The GPU managed node group's arguments (besides cluster, role, subnets and launch template)."""
    nodes_min, nodes_max = node_bounds(cfg.replicas_min, cfg.replicas_max, mapping)
    labels = {k: v for k, v in mapping.node_labels.items() if not k.startswith(RESERVED_LABEL_PREFIXES)}
    args: dict[str, Any] = {
        "ami_type": GPU_AMI_TYPE,
        "capacity_type": CAPACITY_TYPES.get(cfg.effective_provisioning, "ON_DEMAND"),
        "scaling_config": {"min_size": nodes_min, "desired_size": max(nodes_min, 1), "max_size": nodes_max},
        "taints": [{"key": GPU_TAINT["key"], "value": GPU_TAINT["value"], "effect": "NO_SCHEDULE"}],
        "labels": {**labels, TIER_LABEL: cfg.tier, "dsdeploy.io/gpu": "true"},
    }
    if cfg.effective_provisioning != "capacity-block":  # a Capacity Block names the type in the template
        args["instance_types"] = [mapping.machine_type]
    return args
