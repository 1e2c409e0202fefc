"""Replicas that span nodes: tensor parallel inside each node, pipeline parallel across the nodes.

When one node of a tier cannot hold a model (weights + reserve + one sequence of the context), the
planner spreads one engine replica over the smallest number of nodes, up to MAX_NODES_PER_REPLICA,
with vLLM's own multi-node layout: tensor parallel over the node's GPUs (NVLink), pipeline parallel
over the nodes (one stage of whole decoder layers per node; only the activations of a step cross the
network). docs/planner.md says why this layout and not tensor parallel across nodes or DP + EP.

Each stage is sized on its own (infra/planner/stages.py: its layers, weights and KV), because a
pipeline stage holds whole layers and vLLM gives every stage the same number of KV-cache blocks (the
smallest any worker can hold). The reserve per GPU is as for one node, with NCCL buffers even at tensor
parallel 1 (the pipeline's point-to-point communicator).
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.catalog import Gpu, MachineMapping, ModelSpec
from infra.catalog.schema import known
from infra.planner.kv import KvLayout
from infra.planner.quantization import QuantSpec
from infra.planner.sizing import (
    GB,
    NCCL_OVERHEAD_BYTES,
    Fit,
    bytes_read_per_step,
    reserve_bytes_per_gpu,
    valid_tp_sizes,
)
from infra.planner.stages import pipeline_partition, stage_kv, stage_weight_bytes

# One replica spans at most this many nodes: every stage adds a network hop to each token, a failed
# pod restarts the whole group (LeaderWorkerSet RecreateGroupOnPodRestart), and the field's recipes for
# the 671B DeepSeek models stop at a few nodes. A larger model needs larger nodes, not a longer pipeline.
MAX_NODES_PER_REPLICA = 4


@dataclass(frozen=True)
class Stage(Fit):
    """One pipeline stage: whole decoder layers on one node's tp GPUs (weight_bytes: the stage's, all its GPUs
    together; the Fit arithmetic of one node, applied to the stage)."""

    first_layer: int = 0
    layers: int = 0
    kv: KvLayout | None = None  # the stage's KV layout per GPU (for what a decode step reads)

    @property
    def last_layer(self) -> int:
        return self.first_layer + self.layers - 1

    @property
    def shortfall_bytes(self) -> int:
        """Bytes this stage lacks for one sequence of the context (0 when it holds one)."""
        return max(0, self.needed_bytes - self.usable_bytes)


@dataclass(frozen=True)
class MultiNodeFit:
    """How a model sits on `nodes` nodes of tp GPUs each (tensor parallel tp x pipeline parallel nodes).

    Exposes the attributes of sizing.Fit that the plan reads (tp, context, kv_tokens, sequences,
    weight_bytes, reserve_bytes_per_gpu, kv_bytes_per_token_per_gpu, needed_bytes, usable_bytes)."""

    nodes: int
    tp: int
    context: int
    weight_bytes: int  # what the stages hold together (tables and draft copies per stage)
    stages: tuple[Stage, ...]
    spec_decode: bool = False

    @property
    def gpus(self) -> int:
        return self.tp * self.nodes

    @property
    def limiting_stage(self) -> Stage:
        """The stage with the fewest KV tokens: vLLM gives every stage that many blocks."""
        return min(self.stages, key=lambda s: s.kv_tokens)

    @property
    def kv_tokens(self) -> int:
        return self.limiting_stage.kv_tokens

    @property
    def sequences(self) -> int:
        return self.kv_tokens // self.context

    @property
    def reserve_bytes_per_gpu(self) -> int:
        return self.stages[0].reserve_bytes_per_gpu

    @property
    def usable_bytes_per_gpu(self) -> int:
        return self.stages[0].usable_bytes_per_gpu

    @property
    def kv_bytes_per_token_per_gpu(self) -> int:
        return self.limiting_stage.kv_bytes_per_token_per_gpu

    @property
    def kv_bytes_per_sequence_per_gpu(self) -> int:
        return self.limiting_stage.kv_bytes_per_sequence_per_gpu

    @property
    def kv_bytes_per_sequence_at_context(self) -> int:
        return self.limiting_stage.kv_bytes_per_sequence_at_context

    @property
    def stage_weight_bytes(self) -> int:
        """Weights the stages hold together (= weight_bytes)."""
        return sum(s.weight_bytes for s in self.stages)

    @property
    def one_sequence_kv_bytes(self) -> int:
        return sum(s.tp * s.kv_bytes_per_sequence_at_context for s in self.stages)

    @property
    def needed_bytes(self) -> int:
        return self.stage_weight_bytes + self.gpus * self.reserve_bytes_per_gpu + self.one_sequence_kv_bytes

    @property
    def usable_bytes(self) -> int:
        return self.gpus * self.usable_bytes_per_gpu

    @property
    def shortfall_bytes(self) -> int:
        """What the stages lack in all for one sequence (each stage must hold its own layers)."""
        return sum(s.shortfall_bytes for s in self.stages)


def node_tp(model: ModelSpec, gpus_per_node: int) -> int:
    """Tensor parallel inside one node: the widest size vLLM accepts on the node's GPUs."""
    return valid_tp_sizes(model, gpus_per_node)[-1]


def evaluate_nodes(
    model: ModelSpec,
    quant: QuantSpec,
    gpu: Gpu,
    gpus_per_node: int,
    nodes: int,
    context: int,
    utilization: float,
    spec_decode: bool = False,
) -> MultiNodeFit:
    tp = node_tp(model, gpus_per_node)
    parts = pipeline_partition(model.num_hidden_layers, nodes)  # type: ignore[arg-type]
    reserve = reserve_bytes_per_gpu(model, tp) + (NCCL_OVERHEAD_BYTES if tp == 1 else 0)
    usable = int(gpu.memory_bytes * utilization)
    stages = []
    first = 0
    for count, weights, kv in zip(
        parts,
        stage_weight_bytes(model, quant, parts, spec_decode),
        stage_kv(model, tp, parts, spec_decode),
        strict=True,
    ):
        stages.append(
            Stage(
                tp=tp,
                usable_bytes_per_gpu=usable,
                weight_bytes=weights,
                reserve_bytes_per_gpu=reserve,
                kv_bytes_per_token_per_gpu=kv.per_token_bytes,
                context=context,
                kv_bytes_per_sequence_per_gpu=kv.per_sequence_bytes,
                spec_decode=spec_decode,
                first_layer=first,
                layers=count,
                kv=kv,
            )
        )
        first += count
    return MultiNodeFit(
        nodes=nodes,
        tp=tp,
        context=context,
        weight_bytes=sum(s.weight_bytes for s in stages),
        stages=tuple(stages),
        spec_decode=spec_decode,
    )


def span_nodes(
    model: ModelSpec,
    quant: QuantSpec,
    gpu: Gpu,
    gpus_per_node: int,
    contexts: list[int],
    utilization: float,
    max_nodes: int,
    spec_decode: bool = False,
) -> MultiNodeFit | None:
    """The fewest nodes (2..max_nodes) that hold one sequence, at the first context that any of them holds."""
    most = min(max_nodes, known(model.num_hidden_layers))
    for context in contexts:
        for nodes in range(2, most + 1):
            fit = evaluate_nodes(model, quant, gpu, gpus_per_node, nodes, context, utilization, spec_decode)
            if fit.sequences >= 1:
                return fit
    return None


def layout_flags(fit: MultiNodeFit) -> list[str]:
    """The vLLM flags of the layout, shared by the leader and every worker (vLLM 0.32.0 `vllm serve`)."""
    return ["--pipeline-parallel-size", str(fit.nodes), "--nnodes", str(fit.nodes)]


# Workers run the engine without an API server: `vllm serve ... --headless` (run_headless in
# vllm/entrypoints/cli/serve.py, vLLM 0.32.0). Their --node-rank and --master-addr are per pod: the chart
# fills them from the LeaderWorkerSet's LWS_WORKER_INDEX and LWS_LEADER_ADDRESS.
WORKER_ONLY_FLAGS = ["--headless"]


def _stage_step_s(model: ModelSpec, quant: QuantSpec, gpu: Gpu, fit: MultiNodeFit, stage: Stage, batch: int) -> float:
    """Seconds one stage's GPUs need to read their share of the weights a step reads and the KV of `batch`
    sequences once (sparse attention: its top-k selection, kv.py read_bytes)."""
    weights = bytes_read_per_step(model, quant, batch) * stage.weight_bytes / fit.stage_weight_bytes
    kv_read = stage.kv.read_bytes(fit.context) if stage.kv else fit.context * stage.kv_bytes_per_token_per_gpu
    per_gpu = weights / stage.tp + batch * kv_read
    return per_gpu / (gpu.memory_bandwidth_gbps * GB)


def decode_tokens_per_s(model: ModelSpec, quant: QuantSpec, gpu: Gpu, fit: MultiNodeFit, batch: int) -> float:
    """Memory-bandwidth upper bound on decode tokens/s of the pipeline for `batch` sequences.

    vLLM keeps up to one micro-batch per stage in flight: the batch splits into m = min(batch, stages)
    micro-batches of b = batch / m sequences. A token crosses every stage in turn, so m micro-batches
    complete per pass of sum(stage steps), and never more than one per step of the slowest stage.
    Network hops between stages are not counted."""
    if batch <= 0:
        return 0.0
    micro = min(batch, fit.nodes)
    per_micro = batch / micro
    steps = [_stage_step_s(model, quant, gpu, fit, s, max(1, round(per_micro))) for s in fit.stages]
    return min(micro * per_micro / sum(steps), per_micro / max(steps))


def explain_stages(fit: MultiNodeFit, tier_key: str, one_node_needed: int, one_node_usable: int) -> list[str]:
    """Readable lines: why the replica spans nodes, and each stage's arithmetic."""
    lines = [
        f"one node of tier {tier_key} ({fit.tp} GPU(s), {one_node_usable / GB:.1f} GB usable) holds no sequence: it "
        f"would need {one_node_needed / GB:.1f} GB; so one replica spans {fit.nodes} nodes: tensor parallel "
        f"{fit.tp} inside each node, pipeline parallel {fit.nodes} across them ({fit.gpus} GPUs; the fewest "
        f"nodes, at most {MAX_NODES_PER_REPLICA}, whose every stage holds one {fit.context}-token sequence)",
    ]
    for index, s in enumerate(fit.stages):
        bounded = f" + {s.kv_bytes_per_sequence_per_gpu:,} per sequence" if s.kv_bytes_per_sequence_per_gpu else ""
        draft = " and the draft" if fit.spec_decode and index == len(fit.stages) - 1 else ""
        lines.append(
            f"stage {index} (node {index}): layers {s.first_layer}-{s.last_layer} ({s.layers}){draft}, weights "
            f"{s.weight_bytes / GB:.2f} GB = {s.weight_bytes / s.tp / GB:.2f} GB per GPU; KV per GPU "
            f"{s.kv_bytes_per_token_per_gpu:,} bytes per token{bounded}; {s.kv_budget_bytes_per_gpu / GB:.2f} GB for "
            f"KV = {s.kv_tokens:,} tokens"
        )
    limiting = fit.stages.index(fit.limiting_stage)
    lines.append(
        f"KV capacity of the replica: {fit.kv_tokens:,} tokens (stage {limiting} holds the fewest; vLLM "
        f"gives every stage as many blocks)"
    )
    return lines


def spread_mapping(mapping: MachineMapping, gpus_per_replica: int, nodes: int, tp: int) -> MachineMapping:
    """A tier's machine mapping for a replica of `nodes` pods of gpus_per_replica / nodes GPUs each."""
    per_pod = gpus_per_replica // nodes
    pods_per_node = mapping.accelerator_count // per_pod
    shape = mapping.machine_type or f"{mapping.accelerator_count}-GPU node"
    if pods_per_node == 1:
        packing = f"each pod takes one whole {shape}"
    else:
        packing = (
            f"one {shape} runs {pods_per_node} of these pods, so R replicas need ceil({nodes} x R / "
            f"{pods_per_node}) machines"
        )
    this_plan = (
        f"This plan's replica spans {nodes} nodes: {nodes} pods of {per_pod} GPU(s) (tensor parallel {tp} "
        f"x pipeline parallel {nodes}); {packing}."
    )
    return mapping.model_copy(
        update={
            "gpus_per_replica": gpus_per_replica,
            "nodes_per_replica": nodes,
            "replicas_per_node": 0,
            "substitution": f"{mapping.substitution} {this_plan}" if mapping.substitution else this_plan,
        }
    )
