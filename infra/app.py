"""App layer: the DeepSeek API key Secret, the engine key Secret and ``charts/dsdeploy`` installed with
``helm.v4.Chart``.

The values come from :func:`infra.chart_values.chart_values`, the same function behind
``dsdeploy values`` (one function, two callers); the program only chooses the ChartOptions.

What ``pulumi up`` waits for: by default the chart's objects are created and not awaited
(``skip_await``): the model download may run for hours, the engine's startup probe allows tens of
minutes and a Flex-start GPU node may appear hours later, far past the provider's timeouts.
``waitForApp: true`` restores the provider's await (for small models or a pre-filled cache).
"""

from __future__ import annotations

import secrets
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pydantic import ValidationError

from infra.chart_options import STACK_OPTION_KEYS, options_of, stack_option_values
from infra.chart_values import CHART_DIR, ChartOptions, ChartValuesError, chart_values
from infra.cloud import GpuNodeFacts
from infra.planner import DeploymentPlan
from infra.stack_config import PROJECT, StackConfig, StackConfigError

RELEASE = "dsdeploy"
CHART_NAME = "dsdeploy"
API_KEY_SECRET = "dsdeploy-deepseek"
# The engine's API key, which only the engine and the router read. The program makes it (not the chart's helm
# lookup, which a render without the cluster answers with nothing, drawing a new key each time).
ENGINE_KEY_SECRET = "dsdeploy-engine-api-key"
# The stack config key behind each ChartOptions field a user controls (for error messages): the stack's own
# options by their keys, and the ones the program derives from a stack key.
OPTION_KEYS = {
    **STACK_OPTION_KEYS,
    **{name: option.stack_key for name, (_, option) in options_of(ChartOptions).items() if option.stack_key},
}


def _trim(text: str, limit: int) -> str:
    """Helm's ``trunc limit | trimSuffix "-"``."""
    text = text[:limit]
    return text[:-1] if text.endswith("-") else text


def component_name(values: dict[str, Any], component: str) -> str:
    """The chart's ``dsdeploy.componentName``: the name of one component's objects (e.g. the router Service)."""
    if values.get("fullnameOverride"):
        fullname = _trim(str(values["fullnameOverride"]), 50)
    else:
        name = values.get("nameOverride") or CHART_NAME
        fullname = _trim(RELEASE if name in RELEASE else f"{RELEASE}-{name}", 50)
    return _trim(f"{fullname}-{component}", 63)


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, nested mappings merged key by key (as Helm merges values files)."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            merge_values(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def chart_options(
    cfg: StackConfig, facts: GpuNodeFacts, storage_class: str | None, min_cache_gib: int | None = None
) -> ChartOptions:
    """The chart options this stack implies: GPU placement from the cloud layer's facts, and the smallest
    cache volume the cloud layer's storage class provisions."""
    return ChartOptions(
        **stack_option_values(cfg),  # the stack's chart options, each as the stack set it (infra/chart_options.py)
        gpu_node_selector=dict(facts.labels),
        gpu_tolerations=facts.tolerations() or None,
        storage_class=storage_class,
        model_cache_min_gib=min_cache_gib,
        cloud_api_key_secret=API_KEY_SECRET,
        engine_api_key_secret=ENGINE_KEY_SECRET,
    )


def check_chart_values(cfg: StackConfig, plan: DeploymentPlan) -> None:
    """Refuse, before any resource exists, a stack whose chart values cannot be computed.

    Runs the same :func:`chart_values` the app runs later, with placeholder GPU facts (they come from
    the cloud layer and are not the user's input); raises :class:`StackConfigError` naming the key.
    """
    try:
        chart_values(plan, chart_options(cfg, GpuNodeFacts(labels={}), cfg.storage_class))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = OPTION_KEYS.get(str(err["loc"][0]) if err["loc"] else "", "config")
        reason = str(err["msg"]).removeprefix("Value error, ")
        # The value is not repeated: hfTokenSecret may hold a credential by mistake.
        raise StackConfigError(
            f"{PROJECT}:{key}: not valid: {reason}. Fix with `pulumi config set {key} <value>`."
        ) from None
    except ChartValuesError as exc:
        message = exc.worded(f"pulumi config set {PROJECT}:checkpoint ORG/REPO")
        raise StackConfigError(
            f"{PROJECT}:quantization/engineType: the chart cannot serve this plan: {message}."
        ) from None


class DsdeployApp(pulumi.ComponentResource):
    """Namespace, the engine key Secret, the API key Secret (when cloud fallback is on) and the chart, after GPU
    enablement."""

    chart: k8s.helm.v4.Chart
    values: dict[str, Any]

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        plan: DeploymentPlan,
        facts: GpuNodeFacts,
        provider: k8s.Provider,
        ready: list[pulumi.Resource],
        storage_class: str | None,
        api_key: pulumi.Input[str] | None,
        min_cache_gib: int | None = None,
        opts: pulumi.ResourceOptions | None = None,
        image_values: dict[str, Any] | None = None,
    ):
        super().__init__("dsdeploy:app:DsdeployApp", name, None, opts)
        on_cluster = pulumi.ResourceOptions(parent=self, provider=provider)
        namespace = k8s.core.v1.Namespace(f"{name}-ns", metadata={"name": cfg.namespace}, opts=on_cluster)
        depends: list[pulumi.Resource] = [namespace, *ready]
        # Drawn once: later runs draw another, which ignore_changes keeps out of the Secret (a new key would
        # have to reach the router and the engine together; rotate with the steps in docs/operations.md).
        depends.append(
            k8s.core.v1.Secret(
                f"{name}-engine-api-key",
                metadata={"name": ENGINE_KEY_SECRET, "namespace": cfg.namespace},
                type="Opaque",
                string_data={"api-key": pulumi.Output.secret(secrets.token_urlsafe(36))},
                opts=pulumi.ResourceOptions(
                    parent=self, provider=provider, depends_on=[namespace], ignore_changes=["stringData"]
                ),
            )
        )
        if cfg.cloud_fallback:
            if api_key is None:  # validate_stack_config requires the secret when cloudFallback is true
                raise StackConfigError(
                    f"{PROJECT}:deepseekApiKey: missing; allowed: the DeepSeek API key, set with "
                    "`pulumi config set --secret deepseekApiKey` (cloudFallback is true)"
                )
            depends.append(
                k8s.core.v1.Secret(
                    f"{name}-deepseek-api-key",
                    metadata={"name": API_KEY_SECRET, "namespace": cfg.namespace},
                    type="Opaque",
                    string_data={"api-key": pulumi.Output.secret(api_key)},
                    opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[namespace]),
                )
            )
        # images: build hands over the pushed images (repository + digest) on top of the planned values.
        self.values = merge_values(
            chart_values(plan, chart_options(cfg, facts, storage_class, min_cache_gib)), image_values or {}
        )
        self.chart = k8s.helm.v4.Chart(
            name,
            name=RELEASE,
            chart=str(CHART_DIR),
            namespace=cfg.namespace,
            values=self.values,
            skip_await=not cfg.wait_for_app,
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=depends),
        )
        self.register_outputs({})
