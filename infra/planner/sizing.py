"""Memory and bandwidth arithmetic of one engine replica (pure functions, no I/O).

Units: bytes and bytes/s. GB in messages = 10^9 bytes. Rules (docs/planner.md explains each):
- weights: tensor group by tensor group in each group's stored precision (weights.py); the draft
  (MTP layer / DSpark stages) only when the plan runs speculative decoding.
- KV cache per attention family as vLLM allocates it (kv.py): a part per token that grows with the
  sequence and, for DeepSeek-V4, a part per sequence (sliding windows, compressor state).
  GQA shards KV heads over TP (kv_heads/tp per GPU, at least 1); MLA, the V3.2 indexer and every V4
  cache are replicated: every GPU holds them whole.
- reserve per GPU: RUNTIME_OVERHEAD (CUDA context, cuBLAS workspaces, CUDA graphs, allocator slack)
  + NCCL buffers when tp > 1 + activations of one scheduler step of MAX_NUM_BATCHED_TOKENS tokens
  (8 x hidden x residual streams + 3 x ffn/tp values of 2 bytes per token) + sampler logits
  (MAX_NUM_SEQS_CAP x vocab x 4).
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.catalog import Gpu, ModelSpec
from infra.catalog.schema import known
from infra.planner.kv import KvLayout, kv_layout
from infra.planner.quantization import QuantSpec
from infra.planner.weights import routed_expert_bytes, weight_bytes

GIB = 1024**3
GB = 10**9
RUNTIME_OVERHEAD_BYTES = int(1.5 * GIB)
NCCL_OVERHEAD_BYTES = int(0.5 * GIB)  # only when tensor_parallel_size > 1
MAX_NUM_BATCHED_TOKENS = 8192  # emitted as --max-num-batched-tokens
MAX_NUM_SEQS_CAP = 256  # vLLM's default --max-num-seqs; the planner never exceeds it
TP_CANDIDATES = (1, 2, 4, 8, 16)


def kv_bytes_per_token(model: ModelSpec, spec_decode: bool = False) -> int:
    """KV cache bytes per token that grow with the sequence, whole model (one copy)."""
    return kv_layout(model, 1, spec_decode).per_token_bytes


def kv_bytes_per_token_per_gpu(model: ModelSpec, tp: int, spec_decode: bool = False) -> int:
    """KV cache bytes per token that EACH GPU of a tp-wide replica stores."""
    return kv_layout(model, tp, spec_decode).per_token_bytes


def ffn_width(model: ModelSpec) -> int:
    """Widest MLP intermediate activation per token (dense MLP or routed + shared experts)."""
    if not model.is_moe:
        return model.intermediate_size  # type: ignore[return-value]
    moe = model.moe_intermediate_size * (model.num_experts_per_tok + model.n_shared_experts)  # type: ignore[operator]
    return max(model.intermediate_size or 0, moe)


def activation_bytes_per_gpu(model: ModelSpec, tp: int) -> int:
    streams = model.hc_mult or 1  # DeepSeek-V4 carries hc_mult residual streams (hyper-connections)
    per_token = (8 * model.hidden_size * streams + 3 * ffn_width(model) // tp) * 2  # type: ignore[operator]
    logits = MAX_NUM_SEQS_CAP * known(model.vocab_size) * 4
    return MAX_NUM_BATCHED_TOKENS * per_token + logits


def reserve_bytes_per_gpu(model: ModelSpec, tp: int) -> int:
    nccl = NCCL_OVERHEAD_BYTES if tp > 1 else 0
    return RUNTIME_OVERHEAD_BYTES + nccl + activation_bytes_per_gpu(model, tp)


def valid_tp_sizes(model: ModelSpec, gpus: int) -> list[int]:
    """TP sizes vLLM accepts for this model that divide the replica's GPU count.

    vLLM needs num_attention_heads % tp == 0, and for GQA either kv_heads % tp == 0 or
    tp % kv_heads == 0 (then KV heads are replicated)."""
    sizes = []
    heads, kv = known(model.num_attention_heads), known(model.num_key_value_heads)
    for tp in TP_CANDIDATES:
        if tp > gpus or gpus % tp or heads % tp:
            continue
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
    kv_bytes_per_sequence_per_gpu: int = 0  # bounded per sequence (V4 windows, compressor state)
    spec_decode: bool = False

    @property
    def kv_budget_bytes_per_gpu(self) -> int:
        return self.usable_bytes_per_gpu - self.weight_bytes // self.tp - self.reserve_bytes_per_gpu

    @property
    def kv_bytes_per_sequence_at_context(self) -> int:
        """What one sequence of `context` tokens holds on each GPU."""
        return self.context * self.kv_bytes_per_token_per_gpu + self.kv_bytes_per_sequence_per_gpu

    @property
    def kv_tokens(self) -> int:
        """KV capacity in tokens with every sequence at `context` (the bounded part charged per sequence)."""
        budget = max(0, self.kv_budget_bytes_per_gpu)
        return budget * self.context // self.kv_bytes_per_sequence_at_context

    @property
    def sequences(self) -> int:
        return self.kv_tokens // self.context

    @property
    def needed_bytes(self) -> int:
        """Replica-wide bytes for weights + reserve + one sequence of the context."""
        return self.weight_bytes + self.tp * (self.reserve_bytes_per_gpu + self.kv_bytes_per_sequence_at_context)

    @property
    def usable_bytes(self) -> int:
        return self.tp * self.usable_bytes_per_gpu


def evaluate(
    model: ModelSpec, quant: QuantSpec, gpu: Gpu, tp: int, context: int, utilization: float, spec_decode: bool = False
) -> Fit:
    kv: KvLayout = kv_layout(model, tp, spec_decode)
    return Fit(
        tp=tp,
        usable_bytes_per_gpu=int(gpu.memory_bytes * utilization),
        weight_bytes=weight_bytes(model, quant, spec_decode),
        reserve_bytes_per_gpu=reserve_bytes_per_gpu(model, tp),
        kv_bytes_per_token_per_gpu=kv.per_token_bytes,
        context=context,
        kv_bytes_per_sequence_per_gpu=kv.per_sequence_bytes,
        spec_decode=spec_decode,
    )


def bytes_read_per_step(model: ModelSpec, quant: QuantSpec, batch: int) -> float:
    """Weight bytes one decode step reads for `batch` sequences (whole replica).

    The input embedding table is not streamed (one row per token). For MoE models the routed
    experts touched by a batch are the expected fraction 1 - (1 - k/E)^batch of them."""
    total: float = weight_bytes(model, quant)  # the main model; the draft is left out of the bound
    native = quant.name == model.native_dtype and quant.name in ("fp8", "fp4-fp8")
    if not model.tie_word_embeddings:
        width = 2 if quant.embeddings_16bit or native else quant.bytes_per_weight
        total -= model.vocab_size * model.hidden_size * width  # type: ignore[operator]
    if model.is_moe:
        routed = routed_expert_bytes(model, quant) or model.routed_expert_params * quant.bytes_per_weight
        touched = 1 - (1 - model.num_experts_per_tok / model.n_routed_experts) ** batch  # type: ignore[operator]
        total -= routed * (1 - touched)
    return total


def decode_tokens_per_s(model: ModelSpec, quant: QuantSpec, gpu: Gpu, fit: Fit, batch: int) -> float:
    """Memory-bandwidth upper bound on decode tokens/s for `batch` sequences at fit.context tokens.

    Each GPU reads its shard of the weights (bytes_read_per_step / tp) and the KV cache of every
    sequence it holds once per step (sparse attention: only its top-k selection, kv.py read_bytes);
    speculative decoding is not credited."""
    if batch <= 0:
        return 0.0
    kv_read = kv_layout(model, fit.tp, fit.spec_decode).read_bytes(fit.context)
    per_gpu = bytes_read_per_step(model, quant, batch) / fit.tp + batch * kv_read
    step_s = per_gpu / (gpu.memory_bandwidth_gbps * GB)
    return batch / step_s


def prefill_tokens_per_s(model: ModelSpec, quant: QuantSpec, gpu: Gpu, tp: int) -> float:
    """Compute upper bound on prompt (prefill) tokens/s of one tp-wide replica.

    A prompt token costs about 2 FLOPs per active parameter; the GPUs run them at their dense peak:
    FP8 tensor cores for fp8 on chips that have them, BF16 otherwise (weight-only formats compute
    in BF16). Attention FLOPs, which grow with the prompt length, are not counted."""
    tflops = gpu.fp8_tflops if quant.name == "fp8" and gpu.fp8_tflops else gpu.bf16_tflops
    return tp * tflops * 1e12 / (2 * known(model.active_params))
