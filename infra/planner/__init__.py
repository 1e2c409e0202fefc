"""Capacity planner: does a model in a quantization fit a tier, with what TP, context and flags.

Pure Python (pydantic + the YAML catalogs); never imports torch or pulumi.

    from infra.planner import plan_deployment
    plan = plan_deployment("r1-distill-qwen-7b", "base")
    plan.tensor_parallel_size, plan.max_num_seqs, plan.engine_args
"""

from infra.planner.errors import PlanDoesNotFit, PlanError
from infra.planner.multinode import MAX_NODES_PER_REPLICA
from infra.planner.plan import (
    DEFAULT_CONTEXT,
    GPU_MEMORY_UTILIZATION,
    GPU_MEMORY_UTILIZATION_RANGE,
    DeploymentPlan,
    plan_deployment,
)
from infra.planner.quantization import QUANT_SPECS, QUANTIZATIONS

__all__ = [
    "DEFAULT_CONTEXT",
    "GPU_MEMORY_UTILIZATION",
    "GPU_MEMORY_UTILIZATION_RANGE",
    "MAX_NODES_PER_REPLICA",
    "QUANTIZATIONS",
    "QUANT_SPECS",
    "DeploymentPlan",
    "PlanDoesNotFit",
    "PlanError",
    "plan_deployment",
]
