"""What would fit instead: another quantization on the tier, another tier, more nodes, or a GPU count."""

from __future__ import annotations

from infra.catalog import Catalog, ModelSpec, Tier
from infra.planner.engine import speculative_decoding, unsupported_gpu
from infra.planner.multinode import MAX_NODES_PER_REPLICA, span_nodes
from infra.planner.quantization import QUANT_SPECS
from infra.planner.sizing import GB, TP_CANDIDATES, evaluate, valid_tp_sizes


def best_fit_sequences(
    model: ModelSpec, quant: str, gpu_key: str, gpus: int, context: int, utilization: float, catalog: Catalog
) -> int:
    """Most sequences of `context` any valid TP size of `gpus` GPUs holds (0 = does not fit, or vLLM
    has no kernels for the model on that GPU)."""
    gpu = catalog.gpu(gpu_key)
    if unsupported_gpu(model, gpu):
        return 0
    spec_decode = speculative_decoding(model, quant) is not None
    best = 0
    for tp in valid_tp_sizes(model, gpus):
        best = max(best, evaluate(model, QUANT_SPECS[quant], gpu, tp, context, utilization, spec_decode).sequences)
    return best


# Nearest-first order for suggestions: 8-bit before 4-bit, vLLM-native formats before bitsandbytes,
# GGUF (experimental in vLLM) last. fp4-fp8 exists only for the DeepSeek-V4 checkpoints.
SUGGESTION_ORDER = ("bf16", "fp8", "int8", "bnb-8bit", "fp4-fp8", "gptq-int4", "awq-int4", "bnb-4bit", "gguf-q4")


def _applicable(model: ModelSpec, quant: str) -> bool:
    return quant != "fp4-fp8" or model.native_dtype == "fp4-fp8"


def _quant_order(model: ModelSpec) -> list[str]:
    """Highest fidelity first; within a width, quantizations with published weights first."""

    def width(q: str) -> int:  # 16, 8 or 4 bits
        bits = QUANT_SPECS[q].bits_per_weight
        return 16 if bits >= 12 else 8 if bits >= 6 else 4

    return sorted(
        (q for q in SUGGESTION_ORDER if _applicable(model, q)), key=lambda q: (-width(q), q not in model.published)
    )


def _availability(model: ModelSpec, quant: str) -> str:
    if quant in model.published:
        return "published weights"
    if model.native_dtype == "bf16" and QUANT_SPECS[quant].runtime_vllm_flag:
        return "vLLM quantizes at load"
    if model.native_dtype == "bf16" and QUANT_SPECS[quant].engine == "server" and quant != "gguf-q4":
        return "dsdeploy serve quantizes at load"
    return "no published weights"


def nodes_needed(
    model: ModelSpec, quant: str, tier: Tier, context: int, utilization: float, catalog: Catalog, max_nodes: int
) -> int:
    """Nodes of `tier` one replica needs for a `context`-token sequence in `quant`: 1..max_nodes, 0 = none
    (or vLLM has no kernels for the model on the tier's GPU)."""
    if best_fit_sequences(model, quant, tier.gpu, tier.gpus_per_replica, context, utilization, catalog):
        return 1
    gpu = catalog.gpu(tier.gpu)
    if unsupported_gpu(model, gpu):
        return 0
    spec_decode = speculative_decoding(model, quant) is not None
    fit = span_nodes(
        model, QUANT_SPECS[quant], gpu, tier.gpus_per_replica, [context], utilization, max_nodes, spec_decode
    )
    return fit.nodes if fit else 0


def _across(nodes: int) -> str:
    return "" if nodes == 1 else f" across {nodes} nodes"


def single_node_alternative(
    model: ModelSpec, quant: str, tier_key: str, context: int, utilization: float, catalog: Catalog
) -> str | None:
    """The nearest smaller quantization that one node of the tier holds (for a plan that spans nodes)."""
    tier = catalog.tier(tier_key)
    for q in _quant_order(model):
        if (
            q != quant
            and QUANT_SPECS[q].bits_per_weight <= QUANT_SPECS[quant].bits_per_weight
            and nodes_needed(model, q, tier, context, utilization, catalog, 1)
        ):
            return f"--quantization {q} ({_availability(model, q)})"
    return None


def _other_tier(
    model: ModelSpec, quant: str, tier_key: str, context: int, utilization: float, catalog: Catalog, max_nodes: int = 1
) -> str | None:
    by_size = sorted(catalog.tiers.values(), key=lambda t: t.gpus_per_replica * catalog.gpu(t.gpu).memory_bytes)
    for other in by_size:
        if other.key != tier_key and (
            nodes := nodes_needed(model, quant, other, context, utilization, catalog, max_nodes)
        ):
            return f"tier {other.key} ({other.gpus_per_replica}x {other.gpu}){_across(nodes)} at {quant}"
    return None


def suggest(
    model: ModelSpec, quant: str, tier_key: str, context: int, utilization: float, catalog: Catalog, max_nodes: int = 1
) -> str:
    """A sentence naming the nearest combination from the catalog that fits (a replica of up to max_nodes)."""
    tier = catalog.tier(tier_key)
    options: list[str] = []
    if max_nodes < MAX_NODES_PER_REPLICA:
        nodes = nodes_needed(model, quant, tier, context, utilization, catalog, MAX_NODES_PER_REPLICA)
        if nodes > max_nodes:
            options.append(f"one replica across {nodes} nodes of tier {tier_key} (--max-nodes {nodes})")
    for q in _quant_order(model):
        if q == quant or QUANT_SPECS[q].bits_per_weight > QUANT_SPECS[quant].bits_per_weight:
            continue
        if nodes := nodes_needed(model, q, tier, context, utilization, catalog, max_nodes):
            options.append(f"--quantization {q} on tier {tier_key}{_across(nodes)} ({_availability(model, q)})")
            break
    other = _other_tier(model, quant, tier_key, context, utilization, catalog, max_nodes)
    if other:
        options.append(other)
    if options:
        return "Would fit: " + "; or ".join(options) + "."
    return _beyond_catalog(model, context, utilization, catalog)


def suggest_for_gpu(
    model: ModelSpec,
    quant: str,
    tier_key: str,
    context: int,
    utilization: float,
    catalog: Catalog,
    max_nodes: int = MAX_NODES_PER_REPLICA,
) -> str:
    """For a tier whose GPU vLLM cannot run the model on: the nearest tier that runs and holds it."""
    other = _other_tier(model, quant, tier_key, context, utilization, catalog, max_nodes)
    if other:
        return f"Would fit: {other}."
    return _beyond_catalog(model, context, utilization, catalog)


def _beyond_catalog(model: ModelSpec, context: int, utilization: float, catalog: Catalog) -> str:
    """No tier fits at any quantization: the smallest GPU group from the GPU catalog that would."""
    quant = model.native_dtype
    spec_decode = speculative_decoding(model, quant) is not None
    best: tuple[int, str, int] | None = None  # (total memory, gpu, count)
    for key, gpu in catalog.gpus.items():
        if unsupported_gpu(model, gpu):
            continue
        for tp in valid_tp_sizes(model, max(TP_CANDIDATES)):
            if evaluate(model, QUANT_SPECS[quant], gpu, tp, context, utilization, spec_decode).sequences >= 1:
                total = tp * gpu.memory_bytes
                if best is None or total < best[0]:
                    best = (total, key, tp)
                break
    prefix = "No tier or quantization in the catalog fits."
    if best is None:
        return f"{prefix} Not even 16 GPUs of any catalog type hold it in {quant} (its native weights)."
    total, key, count = best
    return (
        f"{prefix} The smallest replica from the GPU catalog that holds it in {quant} (its native "
        f"weights) is {count}x {key} ({total / GB:.0f} GB), which is not a tier here."
    )
