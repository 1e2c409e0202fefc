"""The StorageClass of the model cache on each cloud (existing clusters bring their own).

One engine replica: SSD block storage (GCE PD, EBS gp3), bound where the pod lands. Several
replicas (``replicasMax > 1``): the chart asks for a ReadWriteMany claim, so the class is a shared
file system the cloud layer prepared (Filestore on GKE, EFS on EKS).
"""

from __future__ import annotations

from typing import Any

import pulumi

STORAGE_CLASS_NAME = "dsdeploy-model-cache"
# The topology key each block CSI driver reports on its nodes (for allowedTopologies).
ZONE_TOPOLOGY_KEYS = {"eks": "topology.ebs.csi.aws.com/zone"}

BLOCK_CLASSES: dict[str, dict[str, Any]] = {
    "gke": {"provisioner": "pd.csi.storage.gke.io", "parameters": {"type": "pd-ssd"}},
    "eks": {
        "provisioner": "ebs.csi.aws.com",
        "parameters": {"type": "gp3", "encrypted": "true", "iops": "6000", "throughput": "500"},
    },
}
SHARED_CLASSES: dict[str, dict[str, Any]] = {
    # Filestore "standard" (Basic HDD, 1 TiB minimum); `storageClass` can name a faster tier's class.
    "gke": {"provisioner": "filestore.csi.storage.gke.io", "parameters": {"tier": "standard"}},
    "eks": {"provisioner": "efs.csi.aws.com", "parameters": {"provisioningMode": "efs-ap", "directoryPerms": "700"}},
}


def storage_class_args(
    platform: str, shared: dict[str, pulumi.Input[str]] | None, zone: pulumi.Input[str] | None = None
) -> dict[str, Any] | None:
    """Arguments of the StorageClass to create, or None where the cluster brings its own.

    ``shared`` holds the cloud layer's shared file system parameters (Filestore network, EFS id)
    when the cache is ReadWriteMany. ``zone`` (a block cache on a multi-zone cluster) pins the
    volume to the GPU nodes' zone, whichever pod (engine or download Job) binds it first.
    """
    table = SHARED_CLASSES if shared is not None else BLOCK_CLASSES
    spec = table.get(platform)
    if spec is None:
        return None
    args: dict[str, Any] = {
        "metadata": {"name": STORAGE_CLASS_NAME},
        "provisioner": spec["provisioner"],
        "parameters": {**spec["parameters"], **(shared or {})},
        "volume_binding_mode": "WaitForFirstConsumer" if shared is None else "Immediate",
        "allow_volume_expansion": True,
        "reclaim_policy": "Delete",
    }
    if zone is not None and shared is None and platform in ZONE_TOPOLOGY_KEYS:
        args["allowed_topologies"] = [
            {"match_label_expressions": [{"key": ZONE_TOPOLOGY_KEYS[platform], "values": [zone]}]}
        ]
    return args
