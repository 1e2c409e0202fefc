"""Rules of the stack config that span several keys (split from :mod:`infra.stack_config`).

:func:`consistency_problems` returns ``(key, value, what is allowed)`` for every rule a validated
config breaks; the caller turns the first one into the user's error message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infra.stack_config import StackConfig

Problem = tuple[str, Any, str]

# Keys that only mean something on an existing cluster, with the value that leaves them unused.
EXISTING_ONLY_DEFAULTS = {
    "gpusAlreadyEnabled": ("gpus_already_enabled", False),
    "gpuOperatorDriver": ("gpu_operator_driver", True),
    "gpuOperatorNfd": ("gpu_operator_nfd", True),
    "gpuOperatorToolkit": ("gpu_operator_toolkit", True),
}


def consistency_problems(cfg: StackConfig) -> list[Problem]:
    """(key, value, what is allowed) for every rule that spans keys, in the order users should fix them."""
    problems: list[Problem] = []
    if cfg.replicas_max < cfg.replicas_min:
        problems.append(("replicasMax", cfg.replicas_max, f"an integer >= replicasMin ({cfg.replicas_min})"))
    rules = {"gke": _gke_problems, "eks": _eks_problems, "existing": _existing_problems}[cfg.platform]
    problems += rules(cfg)
    if cfg.platform == "existing" and not cfg.compact_placement:
        problems.append(
            (
                "compactPlacement",
                False,
                "true (the key applies to gke and eks, whose GPU pools the "
                "program creates; place your own nodes of a multi-node replica close yourself)",
            )
        )
    problems += _image_problems(cfg)
    if cfg.instance_type is not None and cfg.platform != "eks":
        problems.append(
            (
                "instanceType",
                cfg.instance_type,
                "unset on gke and existing (the key pins the EC2 instance type of the EKS GPU node group)",
            )
        )
    if cfg.platform != "existing":
        for key, value in (("gpuNodeLabels", cfg.gpu_node_labels), ("gpuNodeTaints", cfg.gpu_node_taints)):
            if value:
                problems.append((key, "set", "unset on gke/eks (the program labels and taints its own GPU pool)"))
        problems += _existing_only_problems(
            cfg, "the key applies to platform existing only; gke and eks enable GPUs themselves"
        )
    elif cfg.gpus_already_enabled:
        problems += _existing_only_problems(
            cfg, "gpusAlreadyEnabled is true, so no GPU operator is installed", skip="gpusAlreadyEnabled"
        )
    return problems


def _gke_problems(cfg: StackConfig) -> list[Problem]:
    problems: list[Problem] = []
    if not cfg.region:
        problems.append(("region", None, "a GCP region such as us-central1 (required on gke)"))
    if not cfg.zone:
        problems.append(("zone", None, "a zone of the region with the tier's GPUs, e.g. us-central1-a"))
    elif cfg.region and not cfg.zone.startswith(cfg.region + "-"):
        problems.append(("zone", cfg.zone, f"a zone inside region {cfg.region}"))
    if cfg.provisioning == "capacity-block":
        problems.append(("provisioning", cfg.provisioning, "on-demand, spot, flex-start or reservation on gke"))
    if cfg.provisioning == "reservation" and not cfg.reservation_name:
        problems.append(
            ("reservationName", None, "the name of a Compute Engine reservation (provisioning=reservation)")
        )
    if cfg.capacity_reservation_id:
        problems.append(
            (
                "capacityReservationId",
                cfg.capacity_reservation_id,
                "unset on gke (a Compute Engine reservation is named by reservationName)",
            )
        )
    return problems


def _eks_problems(cfg: StackConfig) -> list[Problem]:
    problems: list[Problem] = []
    if not cfg.region:
        problems.append(("region", None, "an AWS region such as us-east-1 (required on eks)"))
    elif cfg.zone and not cfg.zone.startswith(cfg.region):
        problems.append(("zone", cfg.zone, f"an Availability Zone of region {cfg.region}, e.g. {cfg.region}a"))
    if cfg.provisioning == "flex-start":
        problems.append(("provisioning", cfg.provisioning, "on-demand, spot, reservation or capacity-block on eks"))
    reserved = cfg.provisioning in ("reservation", "capacity-block")
    if reserved and not cfg.capacity_reservation_id:
        problems.append(
            (
                "capacityReservationId",
                None,
                f"the id (cr-...) of the EC2 capacity reservation to use (provisioning={cfg.provisioning})",
            )
        )
    if cfg.capacity_reservation_id and not reserved:
        problems.append(
            (
                "provisioning",
                cfg.provisioning,
                "reservation (On-Demand Capacity Reservation) or capacity-block (Capacity Block for ML) "
                "when capacityReservationId is set",
            )
        )
    if cfg.capacity_reservation_id and not cfg.zone:
        problems.append(
            (
                "zone",
                None,
                f"the Availability Zone of capacity reservation {cfg.capacity_reservation_id} "
                "(a reservation holds instances in one zone)",
            )
        )
    if cfg.reservation_name:
        problems.append(
            (
                "reservationName",
                cfg.reservation_name,
                "unset on eks (an EC2 capacity reservation is given by capacityReservationId)",
            )
        )
    return problems


def _existing_problems(cfg: StackConfig) -> list[Problem]:
    problems: list[Problem] = []
    if cfg.provisioning is not None:
        problems.append(("provisioning", cfg.provisioning, "unset on existing (the cluster's nodes exist already)"))
    if cfg.replicas_max > 1 and not cfg.storage_class:
        problems.append(
            (
                "storageClass",
                None,
                "a ReadWriteMany StorageClass of your cluster: with replicasMax > 1 "
                "several engine pods share the model cache",
            )
        )
    for key, value in (
        ("reservationName", cfg.reservation_name),
        ("capacityReservationId", cfg.capacity_reservation_id),
    ):
        if value:
            problems.append((key, value, "unset on existing (the cluster's nodes exist already)"))
    return problems


def _existing_only_problems(cfg: StackConfig, reason: str, skip: str = "") -> list[Problem]:
    """The existing-cluster GPU keys set away from the value that leaves them unused."""
    return [
        (key, getattr(cfg, field), f"{str(unused).lower()} ({reason})")
        for key, (field, unused) in EXISTING_ONLY_DEFAULTS.items()
        if key != skip and getattr(cfg, field) != unused
    ]


def _image_problems(cfg: StackConfig) -> list[Problem]:
    """images: build pushes to Artifact Registry (gke), ECR (eks) or imageRegistry, which existing clusters need."""
    if cfg.images != "build":
        return (
            [
                (
                    "imageRegistry",
                    cfg.image_registry,
                    "unset unless images is build (the published images are pulled from their own registry)",
                )
            ]
            if cfg.image_registry
            else []
        )
    if cfg.platform == "existing" and not cfg.image_registry:
        return [
            (
                "imageRegistry",
                None,
                "the registry prefix to push the images to, such as "
                "registry.example.com/ml (images: build on platform existing; log in with `docker login` first)",
            )
        ]
    return []
