"""The NVIDIA GPU operator for existing clusters whose GPUs are not enabled yet.

It installs (per config) the driver, the container toolkit, the device plugin, GPU feature
discovery and DCGM. Skip it (``gpusAlreadyEnabled: true``) when the cluster already advertises
``nvidia.com/gpu``: a second device plugin on a node is a bug.

The operator deploys its operands only on nodes that node-feature-discovery (NFD) labelled as
having an NVIDIA PCI device, so the NFD worker must tolerate the GPU nodes' taints as well as the
operands do: ``node-feature-discovery.worker.tolerations`` (the NFD subchart's key in the
gpu-operator chart at the pinned version) gets the same list as ``daemonsets.tolerations``. Both
replace the chart's default lists, so the defaults (the control-plane taint for the NFD worker,
``nvidia.com/gpu`` for both) are kept in them. Clusters that already run NFD, or whose hosts
already have the container toolkit, turn those parts off (``gpuOperatorNfd``, ``gpuOperatorToolkit``).
"""

from __future__ import annotations

from typing import Any

from infra.cloud import GpuNodeFacts

CHART = "gpu-operator"
REPO = "https://helm.ngc.nvidia.com/nvidia"
VERSION = "v26.7.0"  # values keys checked against deployments/gpu-operator/values.yaml at this tag
NAMESPACE = "gpu-operator"

# The gpu-operator chart's own defaults at VERSION, kept because a list value replaces the default list.
DEFAULT_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
CONTROL_PLANE_TOLERATION = {
    "key": "node-role.kubernetes.io/control-plane",
    "operator": "Equal",
    "value": "",
    "effect": "NoSchedule",
}


def _unique(tolerations: list[dict[str, str]]) -> list[dict[str, str]]:
    """Tolerations without duplicates, in a stable order."""
    unique = [dict(t) for t in {tuple(sorted(t.items())) for t in tolerations}]
    return sorted(unique, key=lambda t: (t["key"], t.get("value", ""), t.get("effect", "")))


def gpu_operator_values(
    facts: GpuNodeFacts, *, driver: bool = True, nfd: bool = True, toolkit: bool = True
) -> dict[str, Any]:
    """Operator values: which operands run, and tolerations for the GPU nodes' taints on NFD and every operand."""
    operands = _unique([*facts.tolerations(), DEFAULT_GPU_TOLERATION])
    values: dict[str, Any] = {
        "driver": {"enabled": driver},
        "toolkit": {"enabled": toolkit},
        "devicePlugin": {"enabled": True},
        "gfd": {"enabled": True},
        "nfd": {"enabled": nfd},
        "dcgmExporter": {"enabled": True},
        "daemonsets": {"tolerations": operands},
    }
    if nfd:
        values["node-feature-discovery"] = {"worker": {"tolerations": _unique([*operands, CONTROL_PLANE_TOLERATION])}}
    return values


def operands_text(values: dict[str, Any]) -> str:
    """What the operator installs besides the device plugin, for the ``gpuEnablement`` output."""
    parts = [
        f"{'with' if values[key]['enabled'] else 'without'} {label}"
        for key, label in (("driver", "the driver"), ("toolkit", "the container toolkit"), ("nfd", "NFD"))
    ]
    return ", ".join(parts)
