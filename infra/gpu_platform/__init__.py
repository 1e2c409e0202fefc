"""Platform layer: GPU enablement that fits the platform, and the model cache's StorageClass.

- gke: nothing to install. GKE installs the driver (the pool's ``gpu_driver_installation_config``)
  and runs its own device plugin; the app waits for the GPU node pool.
- eks: the NVIDIA device plugin chart (pinned), pinned to the GPU node group.
- existing: the NVIDIA GPU operator (driver on or off), unless ``gpusAlreadyEnabled``.

And, when a replica spans nodes, the LeaderWorkerSet controller (:mod:`infra.gpu_platform.lws`), unless
``lwsAlreadyInstalled``: the app's LeaderWorkerSet needs its CRD and controller first.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.cloud import GpuNodeFacts
from infra.gpu_platform import device_plugin, gpu_operator, lws
from infra.gpu_platform.storage import storage_class_args
from infra.stack_config import StackConfig


class GpuPlatform(pulumi.ComponentResource):
    """GPU enablement plus StorageClass; ``ready`` lists what the app must wait for."""

    ready: list[pulumi.Resource]
    storage_class_name: str | None
    enablement: str
    leader_worker_set: str

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        facts: GpuNodeFacts,
        provider: k8s.Provider,
        gpu_nodes: pulumi.Resource | None,
        shared_cache: dict[str, pulumi.Input[str]] | None = None,
        storage_ready: list[pulumi.Resource] | None = None,
        block_cache_zone: pulumi.Input[str] | None = None,
        leader_worker_set: bool = False,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("dsdeploy:platform:GpuPlatform", name, None, opts)
        after_nodes = pulumi.ResourceOptions(
            parent=self, provider=provider, depends_on=[gpu_nodes] if gpu_nodes else []
        )
        self.ready = [gpu_nodes] if gpu_nodes else []
        if cfg.platform == "gke":
            self.enablement = "GKE-managed NVIDIA driver and device plugin (no extra plugin installed)"
        elif cfg.platform == "eks":
            self.ready.append(self._chart(device_plugin, device_plugin.device_plugin_values(facts), after_nodes))
            self.enablement = f"NVIDIA device plugin chart {device_plugin.VERSION} on the GPU node group"
        elif cfg.gpus_already_enabled:
            self.enablement = "GPUs already enabled on the cluster (gpusAlreadyEnabled): nothing installed"
        else:
            values = gpu_operator.gpu_operator_values(
                facts, driver=cfg.gpu_operator_driver, nfd=cfg.gpu_operator_nfd, toolkit=cfg.gpu_operator_toolkit
            )
            self.ready.append(self._chart(gpu_operator, values, after_nodes))
            self.enablement = f"NVIDIA GPU operator {gpu_operator.VERSION} " + gpu_operator.operands_text(values)

        self.leader_worker_set = "not needed: every replica fits one node"
        if leader_worker_set and cfg.lws_already_installed:
            self.leader_worker_set = "already installed on the cluster (lwsAlreadyInstalled): nothing installed"
        elif leader_worker_set:
            on_cluster = pulumi.ResourceOptions(parent=self, provider=provider)
            self.ready.append(self._chart(lws, lws.lws_values(), on_cluster))
            self.leader_worker_set = f"LeaderWorkerSet controller {lws.APP_VERSION} ({lws.REPO}/{lws.CHART})"

        self.storage_class_name = cfg.storage_class
        args = None if cfg.storage_class else storage_class_args(cfg.platform, shared_cache, block_cache_zone)
        if args is not None:
            storage_class = k8s.storage.v1.StorageClass(
                "model-cache-storage-class",
                opts=pulumi.ResourceOptions.merge(after_nodes, pulumi.ResourceOptions(depends_on=storage_ready or [])),
                **args,
            )
            self.ready.append(storage_class)
            self.storage_class_name = args["metadata"]["name"]
        self.register_outputs({"enablement": self.enablement, "leaderWorkerSet": self.leader_worker_set})

    def _chart(self, source: ModuleType, values: dict[str, Any], opts: pulumi.ResourceOptions) -> k8s.helm.v4.Chart:
        """A pinned upstream chart (module with CHART, REPO, VERSION, NAMESPACE) in its own namespace."""
        namespace = k8s.core.v1.Namespace(
            f"{source.CHART}-ns",
            metadata={"name": source.NAMESPACE},
            opts=pulumi.ResourceOptions(parent=self, provider=opts.provider),
        )
        oci = source.REPO.startswith("oci://")  # an OCI chart is named by its URL; a classic one by its repo
        return k8s.helm.v4.Chart(
            source.CHART,
            chart=f"{source.REPO}/{source.CHART}" if oci else source.CHART,
            version=source.VERSION,
            repository_opts=None if oci else {"repo": source.REPO},
            namespace=source.NAMESPACE,
            values=values,
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[namespace])),
        )
