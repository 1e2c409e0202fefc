"""The NVIDIA device plugin for EKS GPU nodes (the NVIDIA AL2023 AMI has driver and toolkit, no plugin).

The chart's default node affinity asks for labels that only NFD/GFD set
(``feature.node.kubernetes.io/pci-10de.present``, ``nvidia.com/gpu.present``); bare EKS nodes
carry none of them, so the DaemonSet would schedule nowhere. We replace the affinity with the
label our GPU node group sets and tolerate the pool's taint.
"""

from __future__ import annotations

from typing import Any

from infra.cloud import GpuNodeFacts

CHART = "nvidia-device-plugin"
REPO = "https://nvidia.github.io/k8s-device-plugin"
VERSION = "0.18.2"  # values checked by rendering the chart at tag v0.18.2
NAMESPACE = "nvidia-device-plugin"


def device_plugin_values(facts: GpuNodeFacts) -> dict[str, Any]:
    """Values that pin the plugin's DaemonSet to the GPU nodes and let it past their taint."""
    expressions = [{"key": key, "operator": "In", "values": [value]} for key, value in sorted(facts.labels.items())]
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": expressions}]
                }
            }
        },
        "tolerations": [*facts.tolerations(), {"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "priorityClassName": "system-node-critical",
        "gfd": {"enabled": False},
        "nfd": {"enabled": False},
    }
