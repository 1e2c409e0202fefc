"""The plan's arithmetic as readable steps (DeploymentPlan.explanation)."""

from __future__ import annotations

from collections import defaultdict

from infra.catalog import Gpu, ModelSpec, Tier
from infra.planner.kv import KvLayout, kv_layout
from infra.planner.quantization import QuantSpec
from infra.planner.sizing import GB, MAX_NUM_BATCHED_TOKENS, MAX_NUM_SEQS_CAP, Fit
from infra.planner.weights import weight_groups

MIN_USEFUL_SEQS = 8  # the smallest TP reaching this many sequences wins
GROWTH_POINTS = (32_768, 131_072, 1_048_576)


def _num(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def kv_formula(spec: ModelSpec, kv: KvLayout, spec_decode: bool) -> str:
    draft = f" (+{spec.draft_blocks} draft)" if spec_decode and spec.draft_blocks else ""
    if spec.attention == "gqa":
        return f"2 x {spec.num_hidden_layers} layers x {spec.num_key_value_heads} KV heads x {spec.head_dim} x 2 bytes"
    if spec.attention == "mla":
        return f"MLA {spec.num_hidden_layers}{draft} layers x ({spec.kv_lora_rank} + {spec.qk_rope_head_dim}) x 2 bytes"
    if spec.attention == "mla-dsa":
        latent, index = kv.parts[0], kv.parts[1]
        return (
            f"MLA + sparse-attention indexer {spec.num_hidden_layers}{draft} layers x "
            f"(({spec.kv_lora_rank} + {spec.qk_rope_head_dim}) x 2 + {index.per_token} indexer key "
            f"{spec.index_head_dim} fp8 + fp32 scales) = {latent.layers} x {latent.per_token + index.per_token}"
        )
    growing = " + ".join(f"{p.layers} x {_num(float(p.per_token))} {p.name}" for p in kv.parts if p.per_token)
    return f"DeepSeek-V4 hybrid (fp8_ds_mla, block {spec.vllm.block_size}): {growing}"


def _bounded(kv: KvLayout) -> str:
    parts = " + ".join(f"{p.layers} x {p.per_sequence:,} {p.name}" for p in kv.parts if p.per_sequence)
    return f"{parts} = {kv.per_sequence_bytes / 1e6:.2f} MB"


def _weights(spec: ModelSpec, quant: QuantSpec, fit: Fit) -> str:
    groups = weight_groups(spec, quant)
    if len(groups) <= 2:  # one bits-per-weight figure for the whole checkpoint
        embeddings = ", embeddings and output head 16-bit" if quant.embeddings_16bit else ""
        return (
            f"weights: {spec.total_params / 1e9:.2f}B params in {quant.name} ({quant.bits_per_weight:.3f} "  # type: ignore[operator]
            f"bits/weight{embeddings}) = {fit.weight_bytes / GB:.2f} GB"
        )
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    draft_bytes = 0
    for g in groups:
        if g.draft:
            draft_bytes += g.bytes if g.resident else 0
            continue
        by_name[f"{g.name} ({g.precision})"][0] += g.params
        by_name[f"{g.name} ({g.precision})"][1] += g.bytes
    top = sorted(by_name.items(), key=lambda kv: -kv[1][1])
    listed = "; ".join(f"{name} {p / 1e9:.2f}B = {b / GB:.2f} GB" for name, (p, b) in top if b >= 0.005 * GB)
    draft = (
        f"; draft ({spec.draft_blocks} block(s), loaded for speculative decoding, embedding and head shared) "
        f"{draft_bytes / GB:.2f} GB"
        if fit.spec_decode
        else ""
    )
    return (
        f"weights, each tensor group in its stored precision, scales included: {listed}{draft}; "
        f"total on the GPUs {fit.weight_bytes / GB:.2f} GB"
    )


def _concurrency(fit: Fit, capped: str) -> str:
    if not fit.kv_bytes_per_sequence_per_gpu:
        return f"concurrent sequences at {fit.context} tokens: {fit.kv_tokens:,} // {fit.context} = {fit.sequences}{capped}"
    return (
        f"concurrent sequences at {fit.context} tokens: {fit.kv_budget_bytes_per_gpu:,} // ({fit.context} x "
        f"{fit.kv_bytes_per_token_per_gpu:,} + {fit.kv_bytes_per_sequence_per_gpu:,}) = {fit.sequences}{capped}"
    )


def explain(
    spec: ModelSpec,
    quant: QuantSpec,
    gpu: Gpu,
    tier: Tier,
    fit: Fit,
    utilization: float,
    seqs: int,
    per_seq: float,
    batch: float,
) -> list[str]:
    kv = kv_layout(spec, fit.tp, fit.spec_decode)
    kv_heads = f" and fits the {spec.num_key_value_heads} KV heads" if spec.attention == "gqa" else ""
    capped = f" (capped at {MAX_NUM_SEQS_CAP})" if fit.sequences > MAX_NUM_SEQS_CAP else ""
    replicated = "sharded by KV head" if spec.attention == "gqa" else "replicated whole on every GPU"
    steps = [
        _weights(spec, quant, fit),
        f"KV cache per token (grows with the sequence): {kv_formula(spec, kv, fit.spec_decode)} = "
        f"{kv.per_token_bytes:,} bytes; {replicated}, per GPU at TP {fit.tp}: {fit.kv_bytes_per_token_per_gpu:,} bytes",
    ]
    if kv.per_sequence_bytes:
        steps.append(f"KV cache per sequence, bounded whatever its length: {_bounded(kv)}")
    points = sorted({fit.context, *(c for c in GROWTH_POINTS if c <= spec.max_context), spec.max_context})
    growth = ", ".join(f"{c:,} tokens {kv.sequence_bytes(c) / GB:.2f} GB" for c in points)
    steps.append(f"KV cache of one sequence per GPU, growing linearly with its length: {growth}")
    if fit.spec_decode:
        steps.append(
            f"speculative decoding: vLLM --speculative-config {spec.vllm.speculative} with "
            f"{spec.vllm.num_speculative_tokens} draft token(s), using the checkpoint's own {spec.draft_blocks} "
            "draft block(s): their weights and KV layers are counted above; the decode bound below does not "
            "credit the speed-up"
        )
    steps += [
        f"reserve per GPU (runtime, NCCL, activations of {MAX_NUM_BATCHED_TOKENS} batched tokens, sampler): "
        f"{fit.reserve_bytes_per_gpu / GB:.2f} GB",
        f"tensor parallel {fit.tp}: smallest size that divides the {spec.num_attention_heads} attention heads"
        f"{kv_heads} and holds {MIN_USEFUL_SEQS}+ sequences (or the most sequences when none does)",
        f"per GPU: {gpu.memory_mib:,} MiB ({gpu.memory_bytes / GB:.1f} GB) x {utilization:.2f} = {fit.usable_bytes_per_gpu / GB:.2f} GB"
        f" - weights/TP {fit.weight_bytes / fit.tp / GB:.2f} GB - reserve {fit.reserve_bytes_per_gpu / GB:.2f} GB"
        f" = {fit.kv_budget_bytes_per_gpu / GB:.2f} GB for KV = {fit.kv_tokens:,} tokens",
        _concurrency(fit, capped),
        f"decode bound, 1 sequence at {fit.context} tokens: {per_seq:.1f} tokens/s; {seqs} sequences: "
        f"{batch:.1f} tokens/s ({fit.tp}x {gpu.memory_bandwidth_gbps:.0f} GB/s, weights read once per step)",
    ]
    if fit.tp < tier.gpus_per_replica:
        steps.append(
            f"tier {tier.key} gives {tier.gpus_per_replica} GPUs per replica; this plan needs {fit.tp}, so each "
            f"{tier.gpus_per_replica}-GPU slot runs {tier.gpus_per_replica // fit.tp} engine replicas "
            "(see machine(platform).replicas_per_node)"
        )
    return steps
