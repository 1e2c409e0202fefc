"""Which machine of a platform runs a plan: the tier's own shape, or a cheaper listed shape that holds it.

On EKS the base tier's own shape is p4d.24xlarge (AWS sells no single A100): eight GPUs for a one-GPU
replica. The tier lists other shapes per platform (``alternatives`` in infra/catalog/tiers.yaml: the
single-GPU EC2 instances with an L40S or an H100). A listed shape holds a plan when

- a replica fits one node of it (a replica over several nodes stays on the tier's own shape),
- it has the GPUs a replica needs,
- its GPU has at least the memory of the GPU the plan is sized for (the plan's weights, reserve and KV
  cache then fit as planned: vLLM takes ``--gpu-memory-utilization`` of the larger memory, and
  ``--max-num-seqs`` caps the batch as planned),
- the pinned vLLM has kernels for the model on its GPU generation (``unsupported_gpu``: DeepSeek-V3.2
  and V4 need Hopper, so they never land on an L40S), and
- the kubelet's allocatable CPU and memory hold the engine pod's requests (the chart requests
  ENGINE_CPU_MILLIS_PER_GPU per GPU and ENGINE_MEMORY_GIB plus /dev/shm: infra/chart_values.py).

The default is the cheapest of the tier's shape and the listed shapes that hold the plan, by on-demand
price per node in the shipped price sheet (infra/decision/local_prices.yaml, where every price has its
source); a shape without a price is never the default, though a stack may pin it. The chosen shape's
``substitution`` says what changed: the GPU, what it does to the plan's decode figures (they scale with
memory bandwidth), and the other shapes that hold the plan.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from infra.catalog import Gpu, MachineMapping, load_catalog
from infra.planner.engine import unsupported_gpu
from infra.planner.errors import PlanError
from infra.planner.multinode import spread_mapping

if TYPE_CHECKING:
    from infra.decision.prices import CloudMachinePrice
    from infra.planner.plan import DeploymentPlan

ENGINE_CPU_MILLIS_PER_GPU = 4000  # the engine pod's CPU request per GPU (chart_values._engine_resources)
ENGINE_MEMORY_GIB = 16  # its memory request besides /dev/shm (chart_values._engine_resources)
MIB_PER_GIB = 1024


def engine_shm_gib(plan: DeploymentPlan) -> int:
    """The engine pod's /dev/shm (an emptyDir in memory, counted against its memory): NCCL and vLLM's
    shared-memory broadcast need a few GiB per tensor-parallel rank; CPU serving needs 1 GiB."""
    return 1 if plan.gpus_per_replica == 0 else max(2, 4 * plan.tensor_parallel_size)


class MachineChoiceError(PlanError):
    """A pinned machine type is unknown for the tier and platform, or does not hold the plan."""


def tier_shape(plan: DeploymentPlan, platform: str) -> MachineMapping:
    """The tier's own mapping on ``platform``, with this plan's GPUs per replica (and nodes per replica)."""
    mapping = load_catalog().tier(plan.tier).machine_for(platform)
    if plan.nodes_per_replica > 1:
        return spread_mapping(mapping, plan.gpus_per_replica, plan.nodes_per_replica, plan.tensor_parallel_size)
    if mapping.accelerator_count % plan.gpus_per_replica or mapping.gpus_per_replica == plan.gpus_per_replica:
        return mapping
    per_node = mapping.accelerator_count // plan.gpus_per_replica
    shape = mapping.machine_type or f"{mapping.accelerator_count}-GPU node"
    this_plan = (
        f"This plan needs {plan.gpus_per_replica} GPU(s) per replica (tensor parallel "
        f"{plan.tensor_parallel_size}), so one {shape} runs {per_node} replicas."
    )
    return mapping.model_copy(
        update={
            "gpus_per_replica": plan.gpus_per_replica,
            "replicas_per_node": per_node,
            "substitution": f"{mapping.substitution} {this_plan}" if mapping.substitution else None,
        }
    )


def engine_pod_requests(plan: DeploymentPlan) -> tuple[int, int]:
    """(CPU millis, memory MiB) the chart's engine pod of a one-node replica requests."""
    return (ENGINE_CPU_MILLIS_PER_GPU * plan.gpus_per_replica, (ENGINE_MEMORY_GIB + engine_shm_gib(plan)) * MIB_PER_GIB)


def why_not(plan: DeploymentPlan, shape: MachineMapping) -> str | None:
    """Why ``shape`` (a listed alternative) cannot run ``plan`` (None when it can)."""
    catalog = load_catalog()
    name = shape.machine_type
    if plan.nodes_per_replica > 1:
        return (
            f"one replica of this plan spans {plan.nodes_per_replica} nodes of the tier's own shape; "
            f"{name} is offered for one-node replicas only"
        )
    if shape.accelerator_count < plan.gpus_per_replica or shape.accelerator_count % plan.gpus_per_replica:
        return f"{name} has {shape.accelerator_count} GPU(s); the plan needs {plan.gpus_per_replica} per replica"
    planned, gpu = catalog.gpu(plan.gpu), catalog.gpu(shape.gpu or plan.gpu)
    if gpu.memory_mib < planned.memory_mib:
        return (
            f"its {gpu.key} has {gpu.memory_mib:,} MiB; the plan is sized for the {planned.key}'s "
            f"{planned.memory_mib:,} MiB"
        )
    reason = unsupported_gpu(catalog.model(plan.model_id), gpu)
    if reason:
        return reason
    cpu, memory = engine_pod_requests(plan)
    if shape.allocatable_cpu_millis is not None and shape.allocatable_cpu_millis < cpu:
        return f"its {shape.allocatable_cpu_millis:,}m allocatable CPU cannot hold the engine pod's request of {cpu:,}m"
    if shape.allocatable_memory_mib is not None and shape.allocatable_memory_mib < memory:
        return (
            f"its {shape.allocatable_memory_mib:,} MiB allocatable memory cannot hold the engine pod's "
            f"request of {memory:,} MiB"
        )
    return None


@functools.cache
def _shipped_prices() -> dict[str, CloudMachinePrice]:
    from infra.decision.prices import load_local_prices  # lazily: the decision package imports the planner

    return dict(load_local_prices().cloud)


def on_demand_price(machine_type: str | None) -> tuple[float, str] | None:
    """(USD-or-sheet-currency per hour, "CUR/h in REGION") from the shipped price sheet, or None."""
    if machine_type is None:
        return None
    price = _shipped_prices().get(machine_type)
    if price is None or price.on_demand_per_hour is None:
        return None
    return price.on_demand_per_hour, f"{price.currency} {price.on_demand_per_hour:.2f}/h on-demand in {price.region}"


def _decode_scale(planned: Gpu, gpu: Gpu) -> float:
    """What the plan's decode figures become on ``gpu``: they are memory-bandwidth bounds (sizing.py)."""
    return gpu.memory_bandwidth_gbps / planned.memory_bandwidth_gbps


def _described(plan: DeploymentPlan, shape: MachineMapping, how: str, others: list[str]) -> MachineMapping:
    catalog = load_catalog()
    planned, gpu = catalog.gpu(plan.gpu), catalog.gpu(shape.gpu or plan.gpu)
    parts = [shape.substitution or f"{shape.machine_type} runs this plan.", how]
    if gpu.key != planned.key:
        scale = _decode_scale(planned, gpu)
        parts.append(
            f"The plan is sized for the {planned.key} ({planned.memory_mib:,} MiB); the {gpu.key} has "
            f"{gpu.memory_mib:,} MiB, so its memory figures hold, and {gpu.memory_bandwidth_gbps:,.0f} GB/s of "
            f"memory bandwidth against {planned.memory_bandwidth_gbps:,.0f}: decode runs at about "
            f"{scale:.0%} of the plan's figures."
        )
        if gpu.fp8_native and not planned.fp8_native and plan.quantization in ("fp8", "fp4-fp8"):
            parts.append(
                f"The {gpu.key} has FP8 tensor cores: vLLM runs the fp8 weights natively there "
                "(it picks the kernel by GPU; the flags are the same)."
            )
    if others:
        parts.append("Also holding it: " + "; ".join(others) + ".")
    parts.append("Pin a shape with dsdeploy:instanceType.")
    return shape.model_copy(update={"substitution": " ".join(parts)})


def _offer(shape: MachineMapping) -> str:
    price = on_demand_price(shape.machine_type)
    return f"{shape.machine_type} at {price[1]}" if price else f"{shape.machine_type} (no price recorded)"


def choose_machine(plan: DeploymentPlan, platform: str, machine_type: str | None = None) -> MachineMapping:
    """The machine ``plan`` runs on: ``machine_type`` when given (refused with the reason when it does not
    hold the plan), else the cheapest priced shape that holds it (the tier's own shape when none is listed)."""
    own = tier_shape(plan, platform)
    listed = load_catalog().tier(plan.tier).alternatives_for(platform)
    holding = [shape for shape in listed if why_not(plan, shape) is None]
    if machine_type is not None:
        if machine_type == own.machine_type:
            return own
        shape = next((s for s in listed if s.machine_type == machine_type), None)
        allowed = ", ".join(str(s.machine_type) for s in [own, *holding] if s.machine_type) or "none"
        if shape is None:
            raise MachineChoiceError(
                f"machine type {machine_type!r} is not offered for tier {plan.tier} on "
                f"{platform}; allowed for this plan: {allowed}"
            )
        reason = why_not(plan, shape)
        if reason:
            raise MachineChoiceError(
                f"machine type {machine_type!r} does not hold this plan: {reason}; allowed for this plan: {allowed}"
            )
        others = [_offer(s) for s in [*holding, own] if s.machine_type != machine_type]
        return _described(plan, shape, f"Pinned by the stack ({_offer(shape)}).", others)
    priced = [(price[0], shape) for shape in holding if (price := on_demand_price(shape.machine_type))]
    if not priced:
        return own
    cost, cheapest = min(priced, key=lambda pair: pair[0])
    own_price = on_demand_price(own.machine_type)
    if own_price is not None and own_price[0] <= cost:
        return own
    others = [_offer(s) for s in holding if s is not cheapest] + [_offer(own)]
    return _described(plan, cheapest, f"It is the cheapest shape that holds this plan ({_offer(cheapest)}).", others)
