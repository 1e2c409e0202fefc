"""The StorageClass of the model cache on each cloud (existing clusters bring their own)."""

from __future__ import annotations

from typing import Any

STORAGE_CLASS_NAME = "dsdeploy-model-cache"

# provisioner and parameters per platform: SSD-backed block storage, created where the pod lands.
STORAGE_CLASSES: dict[str, dict[str, Any]] = {
    "gke": {"provisioner": "pd.csi.storage.gke.io", "parameters": {"type": "pd-ssd"}},
    "eks": {
        "provisioner": "ebs.csi.aws.com",
        "parameters": {"type": "gp3", "encrypted": "true", "iops": "6000", "throughput": "500"},
    },
}


def storage_class_args(platform: str) -> dict[str, Any] | None:
    """Arguments of the StorageClass to create, or None where the cluster brings its own."""
    spec = STORAGE_CLASSES.get(platform)
    if spec is None:
        return None
    return {
        "metadata": {"name": STORAGE_CLASS_NAME},
        "provisioner": spec["provisioner"],
        "parameters": spec["parameters"],
        "volume_binding_mode": "WaitForFirstConsumer",
        "allow_volume_expansion": True,
        "reclaim_policy": "Delete",
    }
