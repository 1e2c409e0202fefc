"""plan_deployment: does a model/quantization/context fit a tier, how, and with which vLLM flags."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from infra.catalog import Catalog, CatalogError, MachineMapping, ModelSpec, load_catalog
from infra.planner.across_nodes import plan_across_nodes, spread_figures
from infra.planner.advice import suggest, suggest_for_gpu
from infra.planner.checkpoint import checkpoint_for
from infra.planner.engine import engine_args, engine_warnings, speculative_decoding, unsupported_gpu
from infra.planner.errors import PlanDoesNotFit, PlanError, PlanUnsupported
from infra.planner.explain import MIN_USEFUL_SEQS, explain
from infra.planner.multinode import MAX_NODES_PER_REPLICA, WORKER_ONLY_FLAGS, MultiNodeFit, layout_flags
from infra.planner.quantization import QUANT_SPECS, QUANTIZATIONS, QuantSpec
from infra.planner.sizing import (
    GB,
    MAX_NUM_SEQS_CAP,
    Fit,
    decode_tokens_per_s,
    evaluate,
    kv_bytes_per_token,
    prefill_tokens_per_s,
    valid_tp_sizes,
)

# The share of each GPU's memory vLLM may take (--gpu-memory-utilization): dsdeploy's default, always rendered
# as a flag (vLLM 0.32's own default is 0.92, vllm/config/cache.py), and the range every entry point accepts
# (the planner, `dsdeploy plan`/`values`, the stack's gpuMemoryUtilization, the chart's values schema).
GPU_MEMORY_UTILIZATION = 0.90
GPU_MEMORY_UTILIZATION_RANGE = (0.10, 0.99)
DEFAULT_CONTEXT = 32768  # DeepSeek's recommended R1 generation budget (32,768 tokens)
FALLBACK_CONTEXTS = (16384, 8192, 4096)
MIN_CONTEXT = 256


class DeploymentPlan(BaseModel):
    """Everything downstream (chart values, Pulumi, cost) takes from the planner."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model_id: str
    served_model_name: str
    checkpoint: str | None
    quantization: str
    tier: str
    gpu: str
    gpus_per_replica: int  # nodes_per_replica x the GPUs of one node that the replica uses
    tensor_parallel_size: int
    nodes_per_replica: int = 1  # > 1: one replica spans nodes (pipeline parallel across them)
    pipeline_parallel_size: int = 1
    max_model_len: int
    gpu_memory_utilization: float
    max_num_seqs: int
    kv_cache_tokens: int
    weight_bytes: int
    kv_bytes_per_token: int
    kv_bytes_per_token_per_gpu: int
    reserve_bytes: int
    decode_tokens_per_s_per_seq: float
    decode_tokens_per_s_batch: float
    prefill_tokens_per_s: float
    reasoning: bool
    engine: str  # "vllm", or "server" (dsdeploy serve) for the formats the pinned vLLM does not load
    vllm_quantization: str | None
    engine_args: list[str]  # vLLM flags of the leader (the only pod of a one-node replica);
    # empty when the plan runs on the project's server
    worker_engine_args: list[str] = []  # the other nodes' flags; [] for a one-node replica
    reasoning_parser: str | None = None  # vLLM --reasoning-parser (None: no reasoning output split)
    tool_call_parser: str | None = None  # vLLM --tool-call-parser (with --enable-auto-tool-choice)
    speculative_decoding: str | None = None  # "mtp" / "dspark": the checkpoint's draft, counted in the figures
    kv_bytes_per_sequence: int = 0  # KV bytes per sequence per GPU that do not grow (V4 windows)
    warnings: list[str]
    explanation: list[str]

    def machine(self, platform: str, machine_type: str | None = None) -> MachineMapping:
        """The machine this plan runs on on `platform`: the cheapest shape of the tier that holds it, or the
        pinned `machine_type` (MachineChoiceError when it does not hold the plan); infra/planner/machines.py."""
        from infra.planner.machines import choose_machine

        return choose_machine(self, platform, machine_type)


def _lookup(catalog: Catalog, model: str, tier: str, quantization: str | None) -> tuple[ModelSpec, str]:
    try:
        spec = catalog.model(model)
        catalog.tier(tier)
    except CatalogError as exc:
        raise PlanError(str(exc)) from None
    quant = (spec.native_dtype if quantization is None else quantization).strip().lower()
    if quant not in QUANT_SPECS:  # an empty string is unknown too, never the default
        raise PlanError(f"unknown quantization {quantization!r}; allowed: {', '.join(QUANTIZATIONS)}")
    if quant == "fp4-fp8" and spec.native_dtype != "fp4-fp8":
        raise PlanError(
            f"quantization 'fp4-fp8' is the native format of the DeepSeek-V4 checkpoints; {spec.id} "
            f"is published in {spec.native_dtype}: allowed here "
            f"{', '.join(q for q in QUANTIZATIONS if q != 'fp4-fp8')}"
        )
    if spec.unknown:
        by_reason: dict[str, list[str]] = {}
        for field, why in spec.unknown.items():
            by_reason.setdefault(why, []).append(field)
        facts = "; ".join(f"{', '.join(fields)} ({why})" for why, fields in by_reason.items())
        raise PlanUnsupported(
            f"{spec.id} cannot be planned: the catalog has no source for these facts, and the "
            f"planner does not guess them: {facts}"
        )
    return spec, quant


def _contexts(spec: ModelSpec, context: int | None) -> list[int]:
    if context is None:
        first = min(spec.max_context, DEFAULT_CONTEXT)
        return [first] + [c for c in FALLBACK_CONTEXTS if c < first]
    if not MIN_CONTEXT <= context <= spec.max_context:
        raise PlanError(
            f"context {context} is out of range for {spec.id}: allowed {MIN_CONTEXT}..{spec.max_context} tokens"
        )
    return [context]


def _choose(
    spec: ModelSpec,
    quant: QuantSpec,
    catalog: Catalog,
    tier_key: str,
    contexts: list[int],
    utilization: float,
    spec_decode: bool,
) -> Fit | None:
    tier = catalog.tier(tier_key)
    gpu = catalog.gpu(tier.gpu)
    for ctx in contexts:
        fits = [
            f
            for tp in valid_tp_sizes(spec, tier.gpus_per_replica)
            if (f := evaluate(spec, quant, gpu, tp, ctx, utilization, spec_decode)).sequences >= 1
        ]
        if fits:
            useful = [f for f in fits if f.sequences >= MIN_USEFUL_SEQS]
            return useful[0] if useful else max(fits, key=lambda f: f.sequences)
    return None


def _not_fit(
    spec: ModelSpec,
    quant: str,
    catalog: Catalog,
    tier_key: str,
    contexts: list[int],
    utilization: float,
    spec_decode: bool,
) -> PlanDoesNotFit:
    ctx = contexts[0]
    tier = catalog.tier(tier_key)
    gpu = catalog.gpu(tier.gpu)
    widest = valid_tp_sizes(spec, tier.gpus_per_replica)[-1]  # TP 1 is always valid
    fit = evaluate(spec, QUANT_SPECS[quant], gpu, widest, ctx, utilization, spec_decode)
    short = fit.needed_bytes - fit.usable_bytes
    advice = suggest(spec, quant, tier_key, ctx, utilization, catalog)
    message = (
        f"{spec.id} in {quant} does not fit tier {tier_key} ({fit.tp}x {tier.gpu}, {fit.usable_bytes / GB:.1f} GB "
        f"usable at gpu-memory-utilization {utilization:.2f}): weights {fit.weight_bytes / GB:.1f} GB + reserve "
        f"{fit.tp * fit.reserve_bytes_per_gpu / GB:.1f} GB + KV cache for one {ctx}-token sequence "
        f"{fit.tp * fit.kv_bytes_per_sequence_at_context / GB:.1f} GB = {fit.needed_bytes / GB:.1f} GB; "
        f"short by {short / GB:.1f} GB.{_shorter_tried(contexts)} {advice}"
    )
    return PlanDoesNotFit(message, short, advice)


def _shorter_tried(contexts: list[int]) -> str:
    if len(contexts) < 2:
        return ""
    tried = ", ".join(f"{c:,}" for c in contexts[1:])
    return f" Shorter contexts were tried too ({tried} tokens): no sequence fits at any of them."


def plan_deployment(
    model: str,
    tier: str,
    quantization: str | None = None,
    context: int | None = None,
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
    max_nodes: int = MAX_NODES_PER_REPLICA,
) -> DeploymentPlan:
    """Plan one engine replica of `model` on `tier`, over up to `max_nodes` nodes of the tier when one node
    cannot hold it (docs/planner.md). Raises PlanError / PlanDoesNotFit."""
    low, high = GPU_MEMORY_UTILIZATION_RANGE
    if not low <= gpu_memory_utilization <= high:
        raise PlanError(
            f"gpu_memory_utilization {gpu_memory_utilization} is out of range: allowed {low:.2f}..{high:.2f}"
        )
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or not 1 <= max_nodes <= MAX_NODES_PER_REPLICA:
        raise PlanError(
            f"max_nodes {max_nodes!r} is out of range: allowed 1..{MAX_NODES_PER_REPLICA} nodes per replica"
        )
    catalog = load_catalog()
    spec, quant_key = _lookup(catalog, model, tier, quantization)
    tier_spec = catalog.tier(tier)
    gpu = catalog.gpu(tier_spec.gpu)
    quant = QUANT_SPECS[quant_key]
    contexts = _contexts(spec, context)
    reason = unsupported_gpu(spec, gpu)
    if reason:
        advice = suggest_for_gpu(
            spec, quant_key, tier_spec.key, contexts[0], gpu_memory_utilization, catalog, max_nodes
        )
        raise PlanDoesNotFit(f"{spec.id} does not run on tier {tier_spec.key}: {reason}. {advice}", 0, advice)
    speculative = speculative_decoding(spec, quant_key)
    fit: Fit | MultiNodeFit | None = _choose(
        spec, quant, catalog, tier_spec.key, contexts, gpu_memory_utilization, speculative is not None
    )
    if fit is None and quant.engine == "server":  # dsdeploy serve has no multi-node mode
        error = _not_fit(
            spec, quant_key, catalog, tier_spec.key, contexts, gpu_memory_utilization, speculative is not None
        )
        raise PlanDoesNotFit(
            f"{error} ({quant_key} runs on dsdeploy serve, which serves one node per replica: it cannot span nodes.)",
            error.shortfall_bytes,
            error.suggestion,
        )
    if fit is None and max_nodes == 1:
        raise _not_fit(
            spec, quant_key, catalog, tier_spec.key, contexts, gpu_memory_utilization, speculative is not None
        )
    if fit is None:  # no node of the tier holds one sequence: spread the replica over nodes (or refuse)
        fit = plan_across_nodes(
            spec, quant_key, catalog, tier_spec, contexts, gpu_memory_utilization, max_nodes, speculative is not None
        )
    nodes = fit.nodes if isinstance(fit, MultiNodeFit) else 1

    source = checkpoint_for(spec, quant, gpu)
    warnings = list(source.warnings) + engine_warnings(spec, quant_key)
    if fit.context != contexts[0]:
        warnings.append(
            f"context reduced from the default {contexts[0]} to {fit.context} tokens so that one "
            f"sequence fits; pass --context to choose another"
        )
    seqs = min(fit.sequences, MAX_NUM_SEQS_CAP)
    if seqs < MIN_USEFUL_SEQS and nodes == 1:  # a multi-node plan words its own (below)
        warnings.append(
            f"only {seqs} sequence(s) of {fit.context} tokens fit at once; a shorter --context, a "
            "smaller quantization or a larger tier raises concurrency"
        )
    args = (
        engine_args(spec, fit, gpu_memory_utilization, seqs, source.vllm_quantization, speculative)
        if quant.engine == "vllm"
        else []
    )  # the project's server takes no vLLM flags
    if isinstance(fit, MultiNodeFit):
        figures = spread_figures(spec, quant_key, catalog, tier_spec, fit, gpu_memory_utilization, seqs)
        per_seq, batch, explanation = figures.decode_per_seq, figures.decode_batch, figures.explanation
        warnings = figures.warnings + warnings
        after_tp = args.index("--tensor-parallel-size") + 2
        args = args[:after_tp] + layout_flags(fit) + args[after_tp:]
    else:
        per_seq = decode_tokens_per_s(spec, quant, gpu, fit, 1)
        batch = decode_tokens_per_s(spec, quant, gpu, fit, seqs)
        explanation = explain(spec, quant, gpu, tier_spec, fit, gpu_memory_utilization, seqs, per_seq, batch)
    return DeploymentPlan(
        model_id=spec.id,
        served_model_name=spec.served_model_name,
        checkpoint=source.checkpoint,
        quantization=quant_key,
        tier=tier_spec.key,
        gpu=tier_spec.gpu,
        gpus_per_replica=fit.tp * nodes,
        tensor_parallel_size=fit.tp,
        nodes_per_replica=nodes,
        pipeline_parallel_size=nodes,
        max_model_len=fit.context,
        gpu_memory_utilization=gpu_memory_utilization,
        max_num_seqs=seqs,
        kv_cache_tokens=fit.kv_tokens,
        weight_bytes=fit.weight_bytes,
        kv_bytes_per_token=kv_bytes_per_token(spec, speculative is not None),
        kv_bytes_per_token_per_gpu=fit.kv_bytes_per_token_per_gpu,
        reserve_bytes=fit.reserve_bytes_per_gpu * fit.tp * nodes,
        decode_tokens_per_s_per_seq=round(per_seq, 2),
        decode_tokens_per_s_batch=round(batch, 2),
        prefill_tokens_per_s=round(prefill_tokens_per_s(spec, quant, gpu, fit.tp * nodes), 2),
        reasoning=spec.reasoning,
        engine=quant.engine,
        vllm_quantization=source.vllm_quantization,
        engine_args=args,
        worker_engine_args=args + WORKER_ONLY_FLAGS if nodes > 1 else [],
        reasoning_parser=spec.vllm.reasoning_parser,
        tool_call_parser=spec.vllm.tool_call_parser,
        speculative_decoding=speculative,
        kv_bytes_per_sequence=fit.kv_bytes_per_sequence_per_gpu,
        warnings=warnings,
        explanation=explanation,
    )
