"""The StorageClass of the model cache on each cloud (existing clusters bring their own).

One engine replica: SSD block storage (GCE PD, EBS gp3), bound where the pod lands. Several
replicas (``replicasMax > 1``): the chart asks for a ReadWriteMany claim, so the class is a shared
file system the cloud layer prepared (Filestore on GKE, EFS on EKS).
"""

from __future__ import annotations

from typing import Any

import pulumi

STORAGE_CLASS_NAME = "dsdeploy-model-cache"

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


def storage_class_args(platform: str, shared: dict[str, pulumi.Input[str]] | None) -> dict[str, Any] | None:
    """Arguments of the StorageClass to create, or None where the cluster brings its own.

    ``shared`` holds the cloud layer's shared file system parameters (Filestore network, EFS id)
    when the cache is ReadWriteMany.
    """
    table = SHARED_CLASSES if shared is not None else BLOCK_CLASSES
    spec = table.get(platform)
    if spec is None:
        return None
    return {
        "metadata": {"name": STORAGE_CLASS_NAME},
        "provisioner": spec["provisioner"],
        "parameters": {**spec["parameters"], **(shared or {})},
        "volume_binding_mode": "WaitForFirstConsumer" if shared is None else "Immediate",
        "allow_volume_expansion": True,
        "reclaim_policy": "Delete",
    }
