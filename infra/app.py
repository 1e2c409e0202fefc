"""App layer: the DeepSeek API key Secret and ``charts/dsdeploy`` installed with ``helm.v4.Chart``.

The values come from :func:`infra.chart_values.chart_values`, the same function behind
``dsdeploy values`` (one function, two callers); the program only chooses the ChartOptions.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.chart_values import CHART_DIR, ChartOptions, chart_values
from infra.cloud import GpuNodeFacts
from infra.stack_config import StackConfig

RELEASE = "dsdeploy"
API_KEY_SECRET = "dsdeploy-deepseek"


def chart_options(cfg: StackConfig, facts: GpuNodeFacts, storage_class: str | None) -> ChartOptions:
    """The chart options this stack implies: GPU placement from the cloud layer's facts."""
    return ChartOptions(
        platform=cfg.platform,
        gpu_node_selector=dict(facts.labels),
        gpu_tolerations=facts.tolerations() or None,
        storage_class=storage_class,
        model_cache_size=cfg.storage_size,
        airgapped=cfg.airgapped,
        cloud_fallback=cfg.cloud_fallback,
        cloud_api_key_secret=API_KEY_SECRET,
        engine_replicas_min=max(1, cfg.replicas_min),
        engine_replicas_max=cfg.replicas_max,
        router_replicas=cfg.router_replicas,
        hf_token_secret=cfg.hf_token_secret,
        hf_endpoint=cfg.hf_endpoint,
        engine_type=cfg.engine_type,
    )


class DsdeployApp(pulumi.ComponentResource):
    """Namespace, API key Secret (when cloud fallback is on) and the chart, after GPU enablement."""

    chart: k8s.helm.v4.Chart
    values: dict[str, Any]

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        plan: Any,
        facts: GpuNodeFacts,
        provider: k8s.Provider,
        ready: list[pulumi.Resource],
        storage_class: str | None,
        api_key: pulumi.Input[str] | None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("dsdeploy:app:DsdeployApp", name, None, opts)
        on_cluster = pulumi.ResourceOptions(parent=self, provider=provider)
        namespace = k8s.core.v1.Namespace(f"{name}-ns", metadata={"name": cfg.namespace}, opts=on_cluster)
        depends: list[pulumi.Resource] = [namespace, *ready]
        if cfg.cloud_fallback:
            depends.append(k8s.core.v1.Secret(
                f"{name}-deepseek-api-key",
                metadata={"name": API_KEY_SECRET, "namespace": cfg.namespace},
                type="Opaque",
                string_data={"api-key": pulumi.Output.secret(api_key)},
                opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[namespace]),
            ))
        self.values = chart_values(plan, chart_options(cfg, facts, storage_class))
        self.chart = k8s.helm.v4.Chart(
            name,
            name=RELEASE,
            chart=str(CHART_DIR),
            namespace=cfg.namespace,
            values=self.values,
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=depends),
        )
        self.register_outputs({})
