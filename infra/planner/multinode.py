"""Replicas that span nodes: tensor parallel inside each node, pipeline parallel across the nodes.

When one node of a tier cannot hold a model (weights + reserve + one sequence of the context), the
planner spreads one engine replica over the smallest number of nodes, up to MAX_NODES_PER_REPLICA,
with vLLM's own multi-node layout: tensor parallel over the node's GPUs (NVLink), pipeline parallel
over the nodes (one stage of whole decoder layers per node; only the activations of a step cross the
network). docs/planner.md says why this layout and not tensor parallel across nodes or DP + EP.

Each stage is sized on its own, because a pipeline stage holds whole layers and vLLM gives every
stage the same number of KV-cache blocks (the smallest any worker can hold):
- layers per stage: vLLM's default split (``get_pp_indices`` in vllm/distributed/utils.py, vLLM
  0.32.0: layers // pp each, the remainder added to the stages before the last);
- weights per stage: the stage's share of the decoder-layer parameters (dense and MoE layers
  counted apart) in the model's bytes per parameter, plus the input embedding on the first stage and
  the output head on the last (vLLM builds them only there; a tied table is built on both);
- KV per token per GPU: the model's per-GPU KV bytes x the stage's share of the layers;
- reserve per GPU: as for one node, with NCCL buffers even at tensor parallel 1 (the pipeline's
  point-to-point communicator).
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.catalog import Gpu, MachineMapping, ModelSpec
from infra.planner.quantization import QuantSpec
from infra.planner.sizing import (
    GB,
    NCCL_OVERHEAD_BYTES,
    Fit,
    bytes_read_per_step,
    kv_bytes_per_token_per_gpu,
    reserve_bytes_per_gpu,
    valid_tp_sizes,
    weight_bytes,
)

# One replica spans at most this many nodes: every stage adds a network hop to each token, a failed
# pod restarts the whole group (LeaderWorkerSet RecreateGroupOnPodRestart), and the field's recipes for
# the 671B DeepSeek models stop at a few nodes. A larger model needs larger nodes, not a longer pipeline.
MAX_NODES_PER_REPLICA = 4


def pipeline_partition(num_layers: int, stages: int) -> list[int]:
    """Decoder layers per pipeline stage, as vLLM splits them without VLLM_PP_LAYER_PARTITION."""
    if not 1 <= stages <= num_layers:
        raise ValueError(f"{stages} pipeline stages for {num_layers} layers")
    parts = [num_layers // stages] * stages
    for i in range(2, num_layers % stages + 2):
        parts[-i] += 1
    return parts


def layer_params(model: ModelSpec) -> list[int]:
    """Parameters of each decoder layer: attention and norms alike in every layer, then the layer's MLP
    (dense, or routed + shared experts with their router for MoE layers)."""
    layers = model.num_hidden_layers
    dense_mlp = 3 * model.hidden_size * model.intermediate_size
    if model.is_moe:
        dense_layers = model.first_k_dense_replace or 0
        experts = model.n_routed_experts + model.n_shared_experts  # type: ignore[operator]
        moe_mlp = 3 * model.hidden_size * model.moe_intermediate_size * experts \
            + model.hidden_size * model.n_routed_experts  # type: ignore[operator]
    else:
        dense_layers, moe_mlp = layers, 0
    mlps = [dense_mlp if i < dense_layers else moe_mlp for i in range(layers)]
    body = model.total_params - model.embedding_params
    common = (body - sum(mlps)) // layers
    if common < 0:
        raise ValueError(f"{model.id}: the MLPs alone exceed the decoder parameters; check the catalog entry")
    return [common + mlp for mlp in mlps]


@dataclass(frozen=True)
class Stage(Fit):
    """One pipeline stage: whole decoder layers on one node's tp GPUs (weight_bytes: the stage's, all its GPUs
    together; the Fit arithmetic of one node, applied to the stage)."""

    first_layer: int
    layers: int

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
    weight_bytes: int                  # the whole model, as on one node
    stages: tuple[Stage, ...]

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
    def stage_weight_bytes(self) -> int:
        """Weights the stages hold together (a tied embedding table counts on the first and last stage)."""
        return sum(s.weight_bytes for s in self.stages)

    @property
    def one_sequence_kv_bytes(self) -> int:
        return sum(s.tp * self.context * s.kv_bytes_per_token_per_gpu for s in self.stages)

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


def _embedding_table_bytes(model: ModelSpec, quant: QuantSpec) -> int:
    per_param = 2 if quant.embeddings_16bit else quant.bytes_per_weight
    return round(model.vocab_size * model.hidden_size * per_param)


def node_tp(model: ModelSpec, gpus_per_node: int) -> int:
    """Tensor parallel inside one node: the widest size vLLM accepts on the node's GPUs."""
    return valid_tp_sizes(model, gpus_per_node)[-1]


def evaluate_nodes(model: ModelSpec, quant: QuantSpec, gpu: Gpu, gpus_per_node: int, nodes: int, context: int,
                   utilization: float) -> MultiNodeFit:
    tp = node_tp(model, gpus_per_node)
    total = weight_bytes(model, quant)
    table = _embedding_table_bytes(model, quant)
    tables = 1 if model.tie_word_embeddings else 2
    body_bytes = total - tables * table
    params = layer_params(model)
    body_params = sum(params)
    reserve = reserve_bytes_per_gpu(model, tp) + (NCCL_OVERHEAD_BYTES if tp == 1 else 0)
    usable = int(gpu.memory_bytes * utilization)
    kv_model = kv_bytes_per_token_per_gpu(model, tp)
    stages = []
    first = 0
    parts = pipeline_partition(model.num_hidden_layers, nodes)
    for index, count in enumerate(parts):
        share = sum(params[first:first + count])
        stage_bytes = round(body_bytes * share / body_params)
        stage_bytes += table * ((index == 0) + (index == nodes - 1))
        stages.append(Stage(tp=tp, usable_bytes_per_gpu=usable, weight_bytes=stage_bytes, reserve_bytes_per_gpu=reserve,
                            kv_bytes_per_token_per_gpu=-(-kv_model * count // model.num_hidden_layers),
                            context=context, first_layer=first, layers=count))
        first += count
    return MultiNodeFit(nodes=nodes, tp=tp, context=context, weight_bytes=total, stages=tuple(stages))


def span_nodes(model: ModelSpec, quant: QuantSpec, gpu: Gpu, gpus_per_node: int, contexts: list[int],
               utilization: float, max_nodes: int) -> MultiNodeFit | None:
    """The fewest nodes (2..max_nodes) that hold one sequence, at the first context that any of them holds."""
    most = min(max_nodes, model.num_hidden_layers)
    for context in contexts:
        for nodes in range(2, most + 1):
            fit = evaluate_nodes(model, quant, gpu, gpus_per_node, nodes, context, utilization)
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
    """Seconds one stage's GPUs need to read their weights and the KV of `batch` sequences once."""
    weights = bytes_read_per_step(model, quant, batch) * stage.weight_bytes / fit.stage_weight_bytes
    per_gpu = weights / stage.tp + batch * fit.context * stage.kv_bytes_per_token_per_gpu
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
        lines.append(
            f"stage {index} (node {index}): layers {s.first_layer}-{s.last_layer} ({s.layers}), weights "
            f"{s.weight_bytes / GB:.2f} GB = {s.weight_bytes / s.tp / GB:.2f} GB per GPU; KV per token per GPU "
            f"{s.kv_bytes_per_token_per_gpu:,} bytes; {s.kv_budget_bytes_per_gpu / GB:.2f} GB for KV = "
            f"{s.kv_tokens:,} tokens")
    limiting = fit.stages.index(fit.limiting_stage)
    lines.append(f"KV capacity of the replica: {fit.kv_tokens:,} tokens (stage {limiting} holds the fewest; vLLM "
                 f"gives every stage as many blocks)")
    return lines


def spread_mapping(mapping: MachineMapping, gpus_per_replica: int, nodes: int, tp: int) -> MachineMapping:
    """A tier's machine mapping for a replica of `nodes` pods of gpus_per_replica / nodes GPUs each."""
    per_pod = gpus_per_replica // nodes
    pods_per_node = mapping.accelerator_count // per_pod
    shape = mapping.machine_type or f"{mapping.accelerator_count}-GPU node"
    if pods_per_node == 1:
        packing = f"each pod takes one whole {shape}"
    else:
        packing = (f"one {shape} runs {pods_per_node} of these pods, so R replicas need ceil({nodes} x R / "
                   f"{pods_per_node}) machines")
    this_plan = (f"This plan's replica spans {nodes} nodes: {nodes} pods of {per_pod} GPU(s) (tensor parallel {tp} "
                 f"x pipeline parallel {nodes}); {packing}.")
    return mapping.model_copy(update={
        "gpus_per_replica": gpus_per_replica,
        "nodes_per_replica": nodes,
        "replicas_per_node": 0,
        "substitution": f"{mapping.substitution} {this_plan}" if mapping.substitution else this_plan,
    })
