"""The LeaderWorkerSet controller (kubernetes-sigs/lws), from its published Helm chart, pinned.

Installed when the plan's replica spans nodes (the chart then renders the engine as a LeaderWorkerSet)
and the stack does not say the cluster has it already (``lwsAlreadyInstalled``). The chart ships the
LeaderWorkerSet CRD in its ``crds/`` folder (from v0.8.0 on), which Helm installs with the release and
never upgrades or deletes: moving to another LWS release means applying its CRDs first (the LWS
installation guide, "Upgrade by Helm"). The CRD the tests validate the rendered LeaderWorkerSet
against is the one of this very version (tests/support/crds/README.md).
"""

from __future__ import annotations

from typing import Any

CHART = "lws"
REPO = "oci://registry.k8s.io/lws/charts"  # the chart's OCI home (LWS installation guide, "Install by Helm")
VERSION = "0.10.0"  # chart version = release v0.10.0 (without the "v")
APP_VERSION = "v0.10.0"
NAMESPACE = "lws-system"


def lws_values() -> dict[str, Any]:
    """The controller image pinned to the release (the chart's source tree says `main` with pull Always)."""
    return {
        "image": {
            "manager": {"repository": "registry.k8s.io/lws/lws", "tag": APP_VERSION, "pullPolicy": "IfNotPresent"}
        },
        "enablePrometheus": False,
        "enableCertManager": False,
    }
