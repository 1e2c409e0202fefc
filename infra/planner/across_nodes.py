"""The multi-node branch of plan_deployment: choose the node count, or refuse with the shortfall; explain it.

plan.py calls :func:`plan_across_nodes` only when no single node of the tier holds one sequence at any
context it tries; the arithmetic is in :mod:`infra.planner.multinode`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from infra.catalog import Catalog, ModelSpec, Tier
from infra.catalog.schema import known
from infra.planner.advice import single_node_alternative, suggest
from infra.planner.errors import PlanDoesNotFit
from infra.planner.explain import MIN_USEFUL_SEQS, kv_formula
from infra.planner.explain import _weights as weights_step
from infra.planner.kv import kv_layout
from infra.planner.multinode import (
    MAX_NODES_PER_REPLICA,
    MultiNodeFit,
    decode_tokens_per_s,
    evaluate_nodes,
    explain_stages,
    span_nodes,
)
from infra.planner.quantization import QUANT_SPECS, QuantSpec
from infra.planner.sizing import (
    GB,
    MAX_NUM_BATCHED_TOKENS,
    MAX_NUM_SEQS_CAP,
    evaluate,
    valid_tp_sizes,
)
from infra.planner.weights import weight_bytes


@dataclass(frozen=True)
class SpreadFigures:
    """What the plan takes from a multi-node fit besides the fit itself."""

    decode_per_seq: float
    decode_batch: float
    warnings: list[str]
    explanation: list[str]


def plan_across_nodes(
    spec: ModelSpec,
    quant: str,
    catalog: Catalog,
    tier: Tier,
    contexts: list[int],
    utilization: float,
    max_nodes: int,
    spec_decode: bool,
) -> MultiNodeFit:
    """The fewest nodes (up to max_nodes) holding one sequence, or PlanDoesNotFit with the shortfall."""
    gpu = catalog.gpu(tier.gpu)
    fit = span_nodes(
        spec, QUANT_SPECS[quant], gpu, tier.gpus_per_replica, contexts, utilization, max_nodes, spec_decode
    )
    if fit is not None:
        return fit
    raise _not_fit(spec, quant, catalog, tier, contexts, utilization, max_nodes, spec_decode)


def _not_fit(
    spec: ModelSpec,
    quant: str,
    catalog: Catalog,
    tier: Tier,
    contexts: list[int],
    utilization: float,
    max_nodes: int,
    spec_decode: bool,
) -> PlanDoesNotFit:
    ctx = contexts[0]
    gpu = catalog.gpu(tier.gpu)
    nodes = min(max_nodes, known(spec.num_hidden_layers))
    fit = evaluate_nodes(spec, QUANT_SPECS[quant], gpu, tier.gpus_per_replica, nodes, ctx, utilization, spec_decode)
    limit = (
        "the most one replica may span"
        if max_nodes == MAX_NODES_PER_REPLICA
        else f"the most --max-nodes allows; the planner's limit is {MAX_NODES_PER_REPLICA}"
    )
    tried = ""
    if len(contexts) > 1:
        tried = (
            f" Shorter contexts were tried too ({', '.join(f'{c:,}' for c in contexts[1:])} tokens): no "
            "sequence fits at any of them."
        )
    advice = suggest(spec, quant, tier.key, ctx, utilization, catalog, max_nodes)
    message = (
        f"{spec.id} in {quant} does not fit tier {tier.key}, not even across {nodes} nodes ({limit}; {nodes}x "
        f"{fit.tp}x {tier.gpu}, {fit.usable_bytes / GB:.1f} GB usable at gpu-memory-utilization {utilization:.2f}): "
        f"weights {fit.stage_weight_bytes / GB:.1f} GB + reserve {fit.gpus * fit.reserve_bytes_per_gpu / GB:.1f} GB "
        f"+ KV cache for one {ctx}-token sequence {fit.one_sequence_kv_bytes / GB:.1f} GB = "
        f"{fit.needed_bytes / GB:.1f} GB; short by {fit.shortfall_bytes / GB:.1f} GB (each pipeline stage must "
        f"hold its own layers).{tried} {advice}"
    )
    return PlanDoesNotFit(message, fit.shortfall_bytes, advice)


def spread_figures(
    spec: ModelSpec, quant: str, catalog: Catalog, tier: Tier, fit: MultiNodeFit, utilization: float, seqs: int
) -> SpreadFigures:
    """Decode bounds, warnings and the explanation of a multi-node plan."""
    gpu = catalog.gpu(tier.gpu)
    qspec = QUANT_SPECS[quant]
    per_seq = decode_tokens_per_s(spec, qspec, gpu, fit, 1)
    batch = decode_tokens_per_s(spec, qspec, gpu, fit, seqs)
    warnings = [
        f"one replica spans {fit.nodes} nodes of tier {tier.key} ({fit.gpus} GPUs): it runs as a "
        f"LeaderWorkerSet (the LWS controller must be installed) and a failed pod restarts its whole group"
    ]
    if seqs < MIN_USEFUL_SEQS:
        extra = ""
        if fit.nodes < min(MAX_NODES_PER_REPLICA, known(spec.num_hidden_layers)):
            more = evaluate_nodes(
                spec, qspec, gpu, tier.gpus_per_replica, fit.nodes + 1, fit.context, utilization, fit.spec_decode
            )
            extra = f"; {fit.nodes + 1} nodes would hold {min(more.sequences, MAX_NUM_SEQS_CAP)}"
        warnings.append(
            f"only {seqs} sequence(s) of {fit.context} tokens fit at once{extra}; a shorter --context "
            "or a smaller quantization raises concurrency"
        )
    alternative = single_node_alternative(spec, quant, tier.key, fit.context, utilization, catalog)
    if alternative:
        warnings.append(
            f"{alternative} fits one node of tier {tier.key}: a one-node replica needs no "
            "LeaderWorkerSet and sends nothing between nodes"
        )
    widest = valid_tp_sizes(spec, tier.gpus_per_replica)[-1]
    one = evaluate(spec, qspec, gpu, widest, fit.context, utilization, fit.spec_decode)
    kv = kv_layout(spec, fit.tp, fit.spec_decode)
    capped = f" (capped at {MAX_NUM_SEQS_CAP})" if fit.sequences > MAX_NUM_SEQS_CAP else ""
    explanation = [
        weights_step(spec, qspec, replace(one, weight_bytes=weight_bytes(spec, qspec, fit.spec_decode))),
        f"KV cache per token: {kv_formula(spec, kv, fit.spec_decode)} = {kv.per_token_bytes:,} bytes"
        + (f" + {kv.per_sequence_bytes:,} bytes per sequence" if kv.per_sequence_bytes else "")
        + "; a pipeline stage stores only its own layers' (the draft's on the last stage)",
        f"reserve per GPU (runtime, NCCL incl. the pipeline's, activations of {MAX_NUM_BATCHED_TOKENS} batched "
        f"tokens, sampler): {fit.reserve_bytes_per_gpu / GB:.2f} GB",
        *_more_than_one_node(spec, qspec, fit),
        *explain_stages(fit, tier.key, one.needed_bytes, one.usable_bytes),
        f"concurrent sequences at {fit.context} tokens: {fit.kv_tokens:,} // {fit.context} = {fit.sequences}{capped}",
        f"decode bound, 1 sequence at {fit.context} tokens: {per_seq:.1f} tokens/s (the token crosses the "
        f"{fit.nodes} stages in turn); {seqs} sequences: {batch:.1f} tokens/s ({fit.nodes} micro-batches in flight, "
        f"{fit.gpus}x {gpu.memory_bandwidth_gbps:.0f} GB/s; network hops not counted)",
    ]
    return SpreadFigures(per_seq, batch, warnings, explanation)


def _more_than_one_node(spec: ModelSpec, quant: QuantSpec, fit: MultiNodeFit) -> list[str]:
    extra = fit.weight_bytes - weight_bytes(spec, quant, fit.spec_decode)
    if extra <= 0:
        return []
    return [
        f"the stages hold {extra / GB:.2f} GB more than one node would ({fit.weight_bytes / GB:.2f} GB in all): "
        "over a pipeline vLLM builds the embedding on the first stage and the output head on the last (a tied "
        "table on both), and the draft keeps its own copies of them on the last (vLLM shares them only when "
        "the pipeline has one stage)"
    ]
