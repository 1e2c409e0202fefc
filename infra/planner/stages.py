"""What one pipeline stage holds: its layers, their weights and their KV cache (a replica over several nodes).

- Layers per stage: vLLM's default split (``get_pp_indices`` in vllm/distributed/utils.py, vLLM 0.32.0,
  without VLLM_PP_LAYER_PARTITION): layers // stages each, the remainder added to the stages before the last.
- Weights per stage: the checkpoint's tensor groups (weights.py), each spread over the layers it belongs to
  (dense MLP: the first ``first_k_dense_replace`` layers; experts and router: the MoE layers; V4's KV
  compressor and indexer: the layers with that compression ratio; the rest: every layer). The first stage
  also holds the input embedding, the last the output head and final norm (vLLM builds them only there;
  a tied table on both). The speculative-decoding draft runs on the last stage, and with pipeline parallelism
  vLLM does not share the embedding and head with it (``_maybe_share_embeddings`` shares only when the
  pipeline has one stage, vllm/v1/spec_decode/llm_base_proposer.py): its own copies count there too (the
  checkpoint's copies for V3; for V4, whose checkpoint has none, an embedding and head of the draft's own).
- KV per stage: the attention family's layout (kv.py) for the stage's own layers (V4: their compression
  ratios), the draft's layers on the last stage.
"""

from __future__ import annotations

from infra.catalog import ModelSpec
from infra.catalog.schema import known
from infra.planner.kv import KvLayout, kv_layout
from infra.planner.quantization import QuantSpec
from infra.planner.weights import BF16, weight_groups

TABLES = "embedding + output head"  # weights.py's group of the embedding and the output head
MOE_GROUPS = ("routed experts", "shared experts", "router")


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
    (dense, or routed + shared experts with their router for MoE layers). The split of a checkpoint
    sized with one bits-per-weight figure (a community quantization)."""
    layers, hidden = known(model.num_hidden_layers), known(model.hidden_size)
    dense_layers = (model.first_k_dense_replace or 0) if model.is_moe else layers
    dense_mlp = 3 * hidden * (model.intermediate_size or 0)
    moe_mlp = 0
    if model.is_moe:
        routed = known(model.n_routed_experts)
        experts = routed + known(model.n_shared_experts)
        moe_mlp = 3 * hidden * known(model.moe_intermediate_size) * experts + hidden * routed
    mlps = [dense_mlp if i < dense_layers else moe_mlp for i in range(layers)]
    body = model.total_params - model.embedding_params  # type: ignore[operator]
    common = (body - sum(mlps)) // layers
    if common < 0:
        raise ValueError(f"{model.id}: the MLPs alone exceed the decoder parameters; check the catalog entry")
    return [common + mlp for mlp in mlps]


def _layer_weights(model: ModelSpec, group: str) -> list[float]:
    """How one tensor group is spread over the decoder layers (shares summing to 1)."""
    layers = known(model.num_hidden_layers)
    ratios = (model.compress_ratios or [])[:layers]
    dense = (model.first_k_dense_replace or 0) if model.is_moe else layers
    if group == "decoder layers":  # one bits-per-weight figure: by each layer's parameters
        weights = [float(p) for p in layer_params(model)]
    elif group == "dense MLP":
        weights = [float(i < dense) for i in range(layers)]
    elif group in MOE_GROUPS:
        weights = [float(i >= dense) for i in range(layers)]
    elif group == "KV compressor" and ratios:
        weights = [float(r != 0) for r in ratios]
    elif group == "sparse-attention indexer" and ratios:
        weights = [float(r == 4) for r in ratios]
    else:
        weights = [1.0] * layers
    total = sum(weights)
    return [w / total for w in weights]


def stage_weight_bytes(model: ModelSpec, quant: QuantSpec, parts: list[int], spec_decode: bool) -> list[int]:
    """Bytes each stage holds on its GPUs (all of them together)."""
    out = [0.0] * len(parts)
    bounds = [(sum(parts[:i]), sum(parts[: i + 1])) for i in range(len(parts))]
    groups = weight_groups(model, quant)
    if spec_decode and not any(g.draft and not g.resident for g in groups):
        # The checkpoint keeps no copies of its own (V4): the draft still builds an embedding and an output head
        # of its own on the last stage and loads them from the main model's tensors (DeepSeekV4 MTP in
        # vllm/models/deepseek_v4/nvidia/mtp.py: embed_tokens, shared_head.head), one pair per draft block.
        out[-1] += 2 * model.vocab_size * model.hidden_size * BF16 * model.draft_blocks  # type: ignore[operator]
    for g in groups:
        if g.draft:  # the draft's own embedding and head copies too: not shared across a pipeline
            out[-1] += g.bytes if spec_decode else 0
            continue
        if g.name == TABLES:  # the input embedding on the first stage, the output head on the last
            tables = 1 if model.tie_word_embeddings else 2
            out[0] += g.bytes / tables
            out[-1] += g.bytes / tables
            continue
        if g.name == "all weights":  # GGUF: every tensor at the format's bits, the two tables among them
            table = model.vocab_size * model.hidden_size * quant.bytes_per_weight  # type: ignore[operator]
            tables = 1 if model.tie_word_embeddings else 2
            out[0] += table
            out[-1] += table
            rest, name = g.bytes - tables * table, "decoder layers"
        else:
            rest, name = g.bytes, g.name
        shares = _layer_weights(model, name)
        for i, (first, last) in enumerate(bounds):
            out[i] += rest * sum(shares[first:last])
    return [round(b) for b in out]


def stage_kv(model: ModelSpec, tp: int, parts: list[int], spec_decode: bool) -> list[KvLayout]:
    """Each stage's KV layout per GPU: its own layers (V4: with their compression ratios), the draft's on the
    last stage."""
    ratios = model.compress_ratios or []
    layers = known(model.num_hidden_layers)
    out = []
    first = 0
    for i, count in enumerate(parts):
        last = i == len(parts) - 1
        drafts = model.draft_blocks if spec_decode and last else 0
        update: dict[str, object] = {"num_hidden_layers": count, "draft_blocks": drafts}
        if ratios:
            update["compress_ratios"] = ratios[first : first + count] + (
                ratios[layers : layers + drafts] if drafts else []
            )
        out.append(kv_layout(model.model_copy(update=update), tp, bool(drafts)))
        first += count
    return out
