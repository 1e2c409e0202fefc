"""Memory and bandwidth arithmetic of one engine replica (pure functions, no I/O).

Units: bytes and bytes/s. GB in messages = 10^9 bytes. Rules (docs/planner.md explains each):
- weights: (params - embedding params) x bits/8 + embedding params x 2 (embeddings/head stay
  16-bit except in bf16 and GGUF, where every parameter uses the format's bits).
- KV cache per token, model-wide: GQA 2 x layers x kv_heads x head_dim x 2 bytes (bf16 cache);
  MLA layers x (kv_lora_rank + qk_rope_head_dim) x 2 bytes.
  Per GPU under tensor parallelism: GQA shards KV heads (kv_heads/tp per GPU, at least 1 when tp
  exceeds kv_heads and vLLM replicates them); MLA's latent is not split by heads: every GPU holds it.
- reserve per GPU: RUNTIME_OVERHEAD (CUDA context, cuBLAS workspaces, CUDA graphs, allocator slack)
  + NCCL buffers when tp > 1 + activations of one scheduler step of MAX_NUM_BATCHED_TOKENS tokens
  (8 x hidden + 3 x ffn/tp values of 2 bytes per token) + sampler logits (MAX_NUM_SEQS_CAP x vocab x 4).
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.catalog import Gpu, ModelSpec
from infra.planner.quantization import QuantSpec

GIB = 1024**3
GB = 10**9
KV_DTYPE_BYTES = 2                      # vLLM kv-cache-dtype "auto" = bf16 for every catalog model
RUNTIME_OVERHEAD_BYTES = int(1.5 * GIB)
NCCL_OVERHEAD_BYTES = int(0.5 * GIB)    # only when tensor_parallel_size > 1
MAX_NUM_BATCHED_TOKENS = 8192           # emitted as --max-num-batched-tokens
MAX_NUM_SEQS_CAP = 256                  # vLLM's default --max-num-seqs; the planner never exceeds it
TP_CANDIDATES = (1, 2, 4, 8, 16)


def weight_bytes(model: ModelSpec, quant: QuantSpec) -> int:
    if not quant.embeddings_16bit:
        return round(model.total_params * quant.bytes_per_weight)
    body = model.total_params - model.embedding_params
    return round(body * quant.bytes_per_weight + model.embedding_params * 2)


def kv_bytes_per_token(model: ModelSpec) -> int:
    """KV cache bytes per token for the whole model (one copy)."""
    if model.attention == "mla":
        return model.num_hidden_layers * (model.kv_lora_rank + model.qk_rope_head_dim) * KV_DTYPE_BYTES  # type: ignore[operator]
    return 2 * model.num_hidden_layers * model.num_key_value_heads * model.head_dim * KV_DTYPE_BYTES


def kv_bytes_per_token_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV cache bytes per token that EACH GPU of a tp-wide replica stores."""
    if model.attention == "mla":
        return kv_bytes_per_token(model)
    heads_per_gpu = max(1, model.num_key_value_heads // tp)
    return 2 * model.num_hidden_layers * heads_per_gpu * model.head_dim * KV_DTYPE_BYTES


def ffn_width(model: ModelSpec) -> int:
    """Widest MLP intermediate activation per token (dense MLP or routed + shared experts)."""
    if not model.is_moe:
        return model.intermediate_size
    moe = model.moe_intermediate_size * (model.num_experts_per_tok + model.n_shared_experts)  # type: ignore[operator]
    return max(model.intermediate_size, moe)


def activation_bytes_per_gpu(model: ModelSpec, tp: int) -> int:
    per_token = (8 * model.hidden_size + 3 * ffn_width(model) // tp) * 2
    logits = MAX_NUM_SEQS_CAP * model.vocab_size * 4
    return MAX_NUM_BATCHED_TOKENS * per_token + logits


def reserve_bytes_per_gpu(model: ModelSpec, tp: int) -> int:
    nccl = NCCL_OVERHEAD_BYTES if tp > 1 else 0
    return RUNTIME_OVERHEAD_BYTES + nccl + activation_bytes_per_gpu(model, tp)


def valid_tp_sizes(model: ModelSpec, gpus: int) -> list[int]:
    """TP sizes vLLM accepts for this model that divide the replica's GPU count.

    vLLM needs num_attention_heads % tp == 0, and for GQA either kv_heads % tp == 0 or
    tp % kv_heads == 0 (then KV heads are replicated)."""
    sizes = []
    for tp in TP_CANDIDATES:
        if tp > gpus or gpus % tp or model.num_attention_heads % tp:
            continue
        kv = model.num_key_value_heads
        if model.attention == "gqa" and kv % tp and tp % kv:
            continue
        sizes.append(tp)
    return sizes


@dataclass(frozen=True)
class Fit:
    """How one model/quantization/context sits in a tp-wide group of one GPU type."""

    tp: int
    usable_bytes_per_gpu: int
    weight_bytes: int
    reserve_bytes_per_gpu: int
    kv_bytes_per_token_per_gpu: int
    context: int

    @property
    def kv_budget_bytes_per_gpu(self) -> int:
        return self.usable_bytes_per_gpu - self.weight_bytes // self.tp - self.reserve_bytes_per_gpu

    @property
    def kv_tokens(self) -> int:
        return max(0, self.kv_budget_bytes_per_gpu // self.kv_bytes_per_token_per_gpu)

    @property
    def sequences(self) -> int:
        return self.kv_tokens // self.context

    @property
    def needed_bytes(self) -> int:
        """Replica-wide bytes for weights + reserve + one sequence of the context."""
        one_seq = self.context * self.kv_bytes_per_token_per_gpu
        return self.weight_bytes + self.tp * (self.reserve_bytes_per_gpu + one_seq)

    @property
    def usable_bytes(self) -> int:
        return self.tp * self.usable_bytes_per_gpu


def evaluate(model: ModelSpec, quant: QuantSpec, gpu: Gpu, tp: int, context: int, utilization: float) -> Fit:
    return Fit(
        tp=tp,
        usable_bytes_per_gpu=int(gpu.memory_bytes * utilization),
        weight_bytes=weight_bytes(model, quant),
        reserve_bytes_per_gpu=reserve_bytes_per_gpu(model, tp),
        kv_bytes_per_token_per_gpu=kv_bytes_per_token_per_gpu(model, tp),
        context=context,
    )


def bytes_read_per_step(model: ModelSpec, quant: QuantSpec, batch: int) -> float:
    """Weight bytes one decode step reads for `batch` sequences (whole replica).

    The input embedding table is not streamed (one row per token). For MoE models the routed
    experts touched by a batch are the expected fraction 1 - (1 - k/E)^batch of them."""
    total = weight_bytes(model, quant)
    if not model.tie_word_embeddings:
        embed_bytes = model.vocab_size * model.hidden_size * (2 if quant.embeddings_16bit else quant.bytes_per_weight)
        total -= embed_bytes
    if model.is_moe:
        routed = model.routed_expert_params * quant.bytes_per_weight
        touched = 1 - (1 - model.num_experts_per_tok / model.n_routed_experts) ** batch  # type: ignore[operator]
        total -= routed * (1 - touched)
    return total


def decode_tokens_per_s(model: ModelSpec, quant: QuantSpec, gpu: Gpu, fit: Fit, batch: int) -> float:
    """Memory-bandwidth upper bound on decode tokens/s for `batch` sequences at fit.context tokens.

    Each GPU reads its shard of the weights (bytes_read_per_step / tp) and the KV cache of every
    sequence it holds (batch x context x KV bytes per token per GPU) once per step."""
    if batch <= 0:
        return 0.0
    per_gpu = bytes_read_per_step(model, quant, batch) / fit.tp + batch * fit.context * fit.kv_bytes_per_token_per_gpu
    step_s = per_gpu / (gpu.memory_bandwidth_gbps * GB)
    return batch / step_s


def prefill_tokens_per_s(model: ModelSpec, quant: QuantSpec, gpu: Gpu, tp: int) -> float:
    """Compute upper bound on prompt (prefill) tokens/s of one tp-wide replica.

    A prompt token costs about 2 FLOPs per active parameter; the GPUs run them at their dense peak:
    FP8 tensor cores for fp8 on chips that have them, BF16 otherwise (weight-only formats compute
    in BF16). Attention FLOPs, which grow with the prompt length, are not counted."""
    tflops = gpu.fp8_tflops if quant.name == "fp8" and gpu.fp8_tflops else gpu.bf16_tflops
    return tp * tflops * 1e12 / (2 * model.active_params)
