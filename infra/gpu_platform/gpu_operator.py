"""The NVIDIA GPU operator for existing clusters whose GPUs are not enabled yet.

It installs (per config) the driver, the container toolkit, the device plugin, GPU feature
discovery and DCGM. Skip it (``gpusAlreadyEnabled: true``) when the cluster already advertises
``nvidia.com/gpu``: a second device plugin on a node is a bug.
"""

from __future__ import annotations

from typing import Any

from infra.cloud import GpuNodeFacts

CHART = "gpu-operator"
REPO = "https://helm.ngc.nvidia.com/nvidia"
VERSION = "v26.7.0"  # values checked by rendering the chart at this tag (ClusterPolicy)
NAMESPACE = "gpu-operator"


def gpu_operator_values(facts: GpuNodeFacts, install_driver: bool) -> dict[str, Any]:
    """Operator values: driver on/off, and tolerations for the GPU nodes' taints on every operand."""
    tolerations = [*facts.tolerations(), {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    unique = [dict(t) for t in {tuple(sorted(t.items())) for t in tolerations}]
    unique.sort(key=lambda t: (t["key"], t.get("value", "")))
    return {
        "driver": {"enabled": install_driver},
        "toolkit": {"enabled": True},
        "devicePlugin": {"enabled": True},
        "gfd": {"enabled": True},
        "nfd": {"enabled": True},
        "dcgmExporter": {"enabled": True},
        "daemonsets": {"tolerations": unique},
    }
