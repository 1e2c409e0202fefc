"""The Pulumi program as a function: ``build(cfg, secrets)`` declares every layer and returns the outputs.

``infra/__main__.py`` reads the stack config and exports what this returns; tests call
:func:`build` once per platform x tier under ``pulumi.runtime.set_mocks``.
Order: config (validated) -> plan (planner; a plan that does not fit stops here) -> chart values
(checked) -> cloud layer -> platform layer -> app. Nothing is declared before the config, the plan
and the chart values are known to be good.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra.app import DsdeployApp, check_chart_values, component_name
from infra.catalog import MachineMapping
from infra.cloud import ClusterLayer
from infra.cloud.existing import ExistingCluster
from infra.gpu_platform import GpuPlatform
from infra.planner import DeploymentPlan, PlanError, plan_deployment
from infra.planner.machines import MachineChoiceError
from infra.registry import ProjectImages
from infra.stack_config import PROJECT, StackConfig, StackConfigError

ROUTER_PORT = 8080


def make_plan(cfg: StackConfig) -> DeploymentPlan:
    """The planner's plan for this stack, or a StackConfigError carrying the planner's explanation."""
    try:
        plan = plan_deployment(
            cfg.model,
            cfg.tier,
            quantization=cfg.quantization,
            context=cfg.context,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            max_nodes=cfg.max_nodes_per_replica,
        )
    except PlanError as exc:
        raise StackConfigError(f"{PROJECT}:model/tier/quantization: the planner refuses this stack: {exc}") from None
    if plan.nodes_per_replica > 1 and cfg.platform == "existing" and not cfg.storage_class:
        raise StackConfigError(
            f"{PROJECT}:storageClass: missing; allowed: a ReadWriteMany StorageClass of your cluster: one replica "
            f"of {plan.model_id} spans {plan.nodes_per_replica} nodes, and every one of them mounts the model cache. "
            f"Fix with `pulumi config set storageClass <value>`."
        )
    return plan


def machine_for(cfg: StackConfig, plan: DeploymentPlan) -> MachineMapping:
    """The GPU machine of the stack: the pinned dsdeploy:instanceType, or the cheapest shape that holds the plan."""
    try:
        return plan.machine(cfg.platform, cfg.instance_type)
    except MachineChoiceError as exc:
        raise StackConfigError(
            f"{PROJECT}:instanceType: {cfg.instance_type!r} is not valid: {exc}. Fix with `pulumi config set "
            "instanceType <value>`, or remove the key for the cheapest shape that holds the plan."
        ) from None


def plan_summary(plan: DeploymentPlan) -> dict[str, Any]:
    """What the stack outputs about the plan (no secrets)."""
    return {
        "model": plan.served_model_name,
        "modelId": plan.model_id,
        "quantization": plan.quantization,
        "gpu": plan.gpu,
        "gpusPerReplica": plan.gpus_per_replica,
        "tensorParallelSize": plan.tensor_parallel_size,
        "nodesPerReplica": plan.nodes_per_replica,
        "pipelineParallelSize": plan.pipeline_parallel_size,
        "maxModelLen": plan.max_model_len,
        "maxConcurrentSequences": plan.max_num_seqs,
        "warnings": list(plan.warnings),
    }


def _cluster(cfg: StackConfig, mapping: MachineMapping, secrets: dict[str, Any]) -> ClusterLayer:
    if cfg.platform == "gke":
        from infra.cloud.gke import GkeCluster

        return GkeCluster("gke", cfg, mapping)
    if cfg.platform == "eks":
        import pulumi_aws as aws

        from infra.cloud.eks import EksCluster

        # An explicit provider: every AWS resource lands in dsdeploy:region, whatever aws:region says.
        region = aws.Provider("aws", region=cfg.region)
        return EksCluster("eks", cfg, mapping, opts=pulumi.ResourceOptions(providers={"aws": region}))
    return ExistingCluster("existing", cfg, mapping, secrets["kubeconfig"])


def build(cfg: StackConfig, secrets: dict[str, Any]) -> dict[str, Any]:
    """Declare the whole stack; returns the stack outputs (kubeconfig as a secret)."""
    plan = make_plan(cfg)
    mapping = machine_for(cfg, plan)
    check_chart_values(cfg, plan)
    cluster = _cluster(cfg, mapping, secrets)
    platform = GpuPlatform(
        "gpu-platform",
        cfg,
        cluster.gpu_facts,
        cluster.provider,
        cluster.gpu_nodes,
        shared_cache=cluster.shared_cache,
        storage_ready=cluster.storage_ready,
        block_cache_zone=cluster.block_cache_zone,
        leader_worker_set=plan.nodes_per_replica > 1,
    )
    images = ProjectImages("images", cfg, plan.gpus_per_replica) if cfg.images == "build" else None
    app = DsdeployApp(
        "dsdeploy",
        cfg,
        plan,
        cluster.gpu_facts,
        cluster.provider,
        platform.ready,
        platform.storage_class_name,
        secrets.get("deepseekApiKey"),
        min_cache_gib=cluster.min_cache_gib,
        image_values=images.chart_values if images else None,
    )
    router = component_name(app.values, "router")  # the chart's router Service, for both outputs
    substitutions = [text for text in (mapping.substitution,) if text]
    return {
        "routerEndpoint": f"http://{router}.{cfg.namespace}.svc.cluster.local:{ROUTER_PORT}",
        "routerPortForward": f"kubectl -n {cfg.namespace} port-forward svc/{router} {ROUTER_PORT}:{ROUTER_PORT}",
        "kubeconfig": pulumi.Output.secret(cluster.kubeconfig),
        "plan": plan_summary(plan),
        "substitutions": substitutions,
        "provisioning": {
            "model": cfg.effective_provisioning if cfg.platform != "existing" else "existing",
            "note": cluster.provisioning_note,
        },
        "gpuEnablement": platform.enablement,
        "leaderWorkerSet": platform.leader_worker_set,
        "gpuNodes": {"labels": cluster.gpu_facts.labels, "taints": cluster.gpu_facts.taints},
        # The values the chart got (no secrets: the API key is only a Secret's name), for rendering the
        # chart's smoke-test Pod with `helm template --show-only` (helm.v4.Chart makes no Helm release).
        "chartValues": app.values,
        # images: build: what `pulumi up` pushed, as repository@digest (the chart pulls exactly these).
        "images": images.references if images else {},
    }
