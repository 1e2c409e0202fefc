"""One replica's capacity for the cost study: the plan sized for the workload's calls, and its throughput.

Every study plans the model on each tier, whether or not a measured throughput is given: the plan
validates the model, quantization and context, says whether the model fits the tier at all, and
gives the GPUs per replica (so how many replicas a server or cloud node runs). A measured figure
(``--throughput-tokens-per-s``) replaces only the planner's throughput bound, never the fit.

The plan's context (vLLM ``--max-model-len``) is sized for the workload's calls - prompt plus
completion tokens, rounded up to a power of two, at least the planner's minimum and at most the
model's maximum - unless ``--context`` is given. Sizing it at the planner's 32K default would
reserve KV cache for calls 30x longer than the workload's and understate concurrency as much.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from infra.decision.cost_model import calls_per_replica_year
from infra.decision.currency import DecisionInputError
from infra.planner import PlanDoesNotFit, PlanError, plan_deployment
from infra.planner.plan import MIN_CONTEXT
from infra.planner.quantization import QUANTIZATIONS

if TYPE_CHECKING:
    from infra.catalog import Catalog, MachineMapping, ModelSpec, Tier
    from infra.decision.study import CostRequest
    from infra.planner import DeploymentPlan


class TierCapacity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    tier: str
    gpu: str
    gpus_per_replica: int
    max_model_len: int
    tokens_per_s: float
    prefill_tokens_per_s: float | None  # None: a measured figure, which already includes prefill
    source: str
    calls_per_replica_year: float


def check_model(req: CostRequest, catalog: Catalog) -> ModelSpec:
    """The model and quantization of the request, validated whatever the source of the throughput."""
    from infra.catalog import CatalogError

    try:
        spec = catalog.model(req.model)
    except CatalogError as exc:
        raise DecisionInputError(f"--model {req.model!r}: {exc}") from None
    if req.quantization is not None and req.quantization.strip().lower() not in QUANTIZATIONS:
        raise DecisionInputError(f"--quantization {req.quantization!r}: unknown; allowed: {', '.join(QUANTIZATIONS)}")
    return spec


def plan_context(req: CostRequest, spec: ModelSpec) -> int:
    """The max model length to plan with: ``--context``, or the workload's call length rounded up."""
    w = req.workload
    tokens = math.ceil(w.tokens_per_call)
    call = f"a call of {w.prompt_tokens:g} prompt + {w.completion_tokens:g} completion = {tokens:,} tokens"
    if req.context is not None:
        if tokens > req.context:
            raise DecisionInputError(
                f"--context {req.context}: {call} does not fit a replica whose max model length is "
                f"{req.context:,}; give --context {tokens} or more (the model allows up to {spec.max_context:,})"
            )
        return req.context
    if tokens > spec.max_context:
        raise DecisionInputError(
            f"--prompt-tokens / --completion-tokens: {call} is longer than {spec.id}'s maximum context of "
            f"{spec.max_context:,} tokens; no local replica can serve it"
        )
    return min(spec.max_context, max(MIN_CONTEXT, 1 << (tokens - 1).bit_length()))


def tier_capacity(req: CostRequest, tier: Tier, context: int) -> tuple[TierCapacity, DeploymentPlan]:
    """One replica's capacity on ``tier`` and the plan it comes from. Raises PlanDoesNotFit when the model does
    not fit the tier (the study leaves the tier out), unless a measured figure was given for it."""
    try:
        plan = plan_deployment(req.model, tier.key, quantization=req.quantization, context=context)
    except PlanDoesNotFit as exc:
        if req.throughput_tokens_per_s is not None:
            raise DecisionInputError(
                f"--throughput-tokens-per-s: {req.model} cannot run on tier {tier.key} at max model length "
                f"{context:,}, so a measured figure cannot be priced: {exc}"
            ) from None
        raise
    except PlanError as exc:  # context out of the model's range
        raise DecisionInputError(f"--context {context}: {exc}" if req.context else str(exc)) from None
    spread = (
        f" x PP {plan.pipeline_parallel_size} over {plan.nodes_per_replica} nodes" if plan.nodes_per_replica > 1 else ""
    )
    layout = (
        f"{plan.served_model_name} {plan.quantization} on {tier.key}, TP {plan.tensor_parallel_size}{spread}, "
        f"max_model_len {plan.max_model_len:,}"
    )
    if req.throughput_tokens_per_s is not None:
        tps, prefill = req.throughput_tokens_per_s, None
        source = f"measured, given with --throughput-tokens-per-s (replica layout from the planner: {layout})"
    else:
        tps, prefill = plan.decode_tokens_per_s_batch, plan.prefill_tokens_per_s
        source = (
            f"planner upper bound for {layout}, {plan.max_num_seqs} sequences: decode {tps:,.0f} tokens/s, "
            f"prefill {prefill:,.0f} tokens/s"
        )
    cap = calls_per_replica_year(tps, req.workload, req.utilization, prefill_tokens_per_s=prefill)
    return TierCapacity(
        tier=tier.key,
        gpu=tier.gpu,
        gpus_per_replica=plan.gpus_per_replica,
        max_model_len=plan.max_model_len,
        tokens_per_s=tps,
        prefill_tokens_per_s=prefill,
        source=source,
        calls_per_replica_year=cap,
    ), plan


def capacity_on(req: CostRequest, cap: TierCapacity, plan: DeploymentPlan, mapping: MachineMapping) -> TierCapacity:
    """One replica's capacity on the machine that runs it: ``cap`` itself when the machine has the plan's GPU,
    else the planner's bounds on the machine's GPU (decode scales with memory bandwidth, prefill is the
    planner's compute bound on that GPU). A measured --throughput-tokens-per-s is kept as given."""
    from infra.catalog import load_catalog
    from infra.planner.quantization import QUANT_SPECS
    from infra.planner.sizing import prefill_tokens_per_s

    if mapping.gpu is None or mapping.gpu == cap.gpu or cap.prefill_tokens_per_s is None:
        return cap
    catalog = load_catalog()
    planned, gpu = catalog.gpu(cap.gpu), catalog.gpu(mapping.gpu)
    tps = cap.tokens_per_s * gpu.memory_bandwidth_gbps / planned.memory_bandwidth_gbps
    prefill = prefill_tokens_per_s(
        catalog.model(plan.model_id), QUANT_SPECS[plan.quantization], gpu, plan.gpus_per_replica
    )
    source = (
        f"{cap.source}; on {mapping.machine_type}'s {gpu.key}: decode {tps:,.0f} tokens/s (memory bandwidth "
        f"{gpu.memory_bandwidth_gbps:,.0f} against {planned.memory_bandwidth_gbps:,.0f} GB/s), prefill "
        f"{prefill:,.0f} tokens/s"
    )
    calls = calls_per_replica_year(tps, req.workload, req.utilization, prefill_tokens_per_s=prefill)
    return cap.model_copy(
        update={
            "gpu": gpu.key,
            "tokens_per_s": tps,
            "prefill_tokens_per_s": prefill,
            "source": source,
            "calls_per_replica_year": calls,
        }
    )
