"""The plan's arithmetic as readable steps (DeploymentPlan.explanation)."""

from __future__ import annotations

from infra.catalog import Gpu, ModelSpec, Tier
from infra.planner.quantization import QuantSpec
from infra.planner.sizing import GB, MAX_NUM_BATCHED_TOKENS, MAX_NUM_SEQS_CAP, Fit, kv_bytes_per_token

MIN_USEFUL_SEQS = 8  # the smallest TP reaching this many sequences wins


def kv_formula(spec: ModelSpec) -> str:
    if spec.attention == "mla":
        return f"MLA {spec.num_hidden_layers} layers x ({spec.kv_lora_rank} + {spec.qk_rope_head_dim}) x 2 bytes"
    return f"2 x {spec.num_hidden_layers} layers x {spec.num_key_value_heads} KV heads x {spec.head_dim} x 2 bytes"


def weights_step(spec: ModelSpec, quant: QuantSpec, weight_bytes: int) -> str:
    embeddings = ", embeddings and output head 16-bit" if quant.embeddings_16bit else ""
    return (f"weights: {spec.total_params / 1e9:.2f}B params in {quant.name} ({quant.bits_per_weight:.3f} "
            f"bits/weight{embeddings}) = {weight_bytes / GB:.2f} GB")


def explain(spec: ModelSpec, quant: QuantSpec, gpu: Gpu, tier: Tier, fit: Fit, utilization: float, seqs: int,
            per_seq: float, batch: float) -> list[str]:
    kv_heads = "" if spec.attention == "mla" else f" and fits the {spec.num_key_value_heads} KV heads"
    capped = f" (capped at {MAX_NUM_SEQS_CAP})" if fit.sequences > MAX_NUM_SEQS_CAP else ""
    steps = [
        weights_step(spec, quant, fit.weight_bytes),
        f"KV cache per token: {kv_formula(spec)} = {kv_bytes_per_token(spec):,} bytes; per GPU at TP {fit.tp}: "
        f"{fit.kv_bytes_per_token_per_gpu:,} bytes",
        f"reserve per GPU (runtime, NCCL, activations of {MAX_NUM_BATCHED_TOKENS} batched tokens, sampler): "
        f"{fit.reserve_bytes_per_gpu / GB:.2f} GB",
        f"tensor parallel {fit.tp}: smallest size that divides the {spec.num_attention_heads} attention heads"
        f"{kv_heads} and holds {MIN_USEFUL_SEQS}+ sequences (or the most sequences when none does)",
        f"per GPU: {gpu.memory_mib:,} MiB ({gpu.memory_bytes / GB:.1f} GB) x {utilization:.2f} = {fit.usable_bytes_per_gpu / GB:.2f} GB"
        f" - weights/TP {fit.weight_bytes / fit.tp / GB:.2f} GB - reserve {fit.reserve_bytes_per_gpu / GB:.2f} GB"
        f" = {fit.kv_budget_bytes_per_gpu / GB:.2f} GB for KV = {fit.kv_tokens:,} tokens",
        f"concurrent sequences at {fit.context} tokens: {fit.kv_tokens:,} // {fit.context} = {fit.sequences}{capped}",
        f"decode bound, 1 sequence at {fit.context} tokens: {per_seq:.1f} tokens/s; {seqs} sequences: "
        f"{batch:.1f} tokens/s ({fit.tp}x {gpu.memory_bandwidth_gbps:.0f} GB/s, weights read once per step)",
    ]
    if fit.tp < tier.gpus_per_replica:
        steps.append(
            f"tier {tier.key} gives {tier.gpus_per_replica} GPUs per replica; this plan needs {fit.tp}, so each "
            f"{tier.gpus_per_replica}-GPU slot runs {tier.gpus_per_replica // fit.tp} engine replicas "
            "(see machine(platform).replicas_per_node)")
    return steps
