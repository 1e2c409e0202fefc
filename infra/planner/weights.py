"""Weight bytes of a checkpoint, tensor group by tensor group, each in its own stored precision.

Native DeepSeek checkpoints mix precisions, and a single bits-per-weight figure misses by several
percent. The groups follow the checkpoints' own tensor layout:

- V3 family (V3, R1, V3.1, R1-0528, V3.2): every linear layer FP8 e4m3 with one fp32 `weight_scale_inv`
  per 128x128 block (README_WEIGHTS.md of DeepSeek-V3); embedding, output head, norms and the MoE router
  bf16, the router bias fp32. The MTP layer adds `enorm`/`hnorm`, a bf16 `eh_proj` and its own copies
  of the embedding and output head (which vLLM shares with the main model instead of loading:
  vllm/v1/spec_decode/llm_base_proposer.py).
- V4 (V4-Flash, V4-Pro): routed experts FP4 (two e2m1 values per byte) with one e8m0 scale per 32
  inputs; attention, shared experts and the indexer query FP8 e4m3 with one e8m0 scale per 128x128 block;
  compressor, indexer compressor and router weights bf16; hyper-connection mixers, compressor position
  biases and attention sinks fp32; the hash-routing table int64.

Every other quantization (community AWQ/GPTQ/GGUF checkpoints, vLLM's load-time fp8) is sized with the
format's average bits per weight (quantization.py), embeddings and output head 16-bit, no draft layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from infra.catalog import ModelSpec
from infra.catalog.schema import known
from infra.planner.quantization import QuantSpec

BLOCK = 128  # FP8 block-scale tile (quantization_config.weight_block_size)
MXFP4_GROUP = 32  # inputs per e8m0 scale of an FP4 expert weight
BF16, FP32, INT64 = 2, 4, 8


@dataclass(frozen=True)
class TensorGroup:
    """One kind of tensor in a checkpoint: how many weights, and the bytes they take as stored."""

    name: str
    params: int  # weight elements, unpacked (an FP4 pair is two), scales not included
    stored_elements: int  # tensor elements as stored (packed FP4 bytes and scale entries included)
    bytes: int  # bytes as stored, scales included
    precision: str
    draft: bool = False  # part of the speculative-decoding draft (MTP layer / DSpark stage)
    resident: bool = True  # vLLM keeps it on the GPUs (False: a duplicate vLLM shares instead)


def _fp8_v3(out: int, inp: int) -> tuple[int, int, int]:
    scales = ceil(out / BLOCK) * ceil(inp / BLOCK)
    return out * inp, out * inp + scales, out * inp + scales * FP32


def _fp8_v4(out: int, inp: int) -> tuple[int, int, int]:
    scales = ceil(out / BLOCK) * ceil(inp / BLOCK)
    return out * inp, out * inp + scales, out * inp + scales  # e8m0: one byte per scale


def _fp4(out: int, inp: int) -> tuple[int, int, int]:
    scales = out * ceil(inp / MXFP4_GROUP)
    return out * inp, out * inp // 2 + scales, out * inp // 2 + scales


class _Groups:
    """Accumulates (params, stored elements, bytes) per group name."""

    def __init__(self) -> None:
        self._acc: dict[tuple[str, str, bool, bool], list[int]] = {}

    def add(
        self,
        name: str,
        precision: str,
        counts: tuple[int, int, int],
        times: int = 1,
        draft: bool = False,
        resident: bool = True,
    ) -> None:
        acc = self._acc.setdefault((name, precision, draft, resident), [0, 0, 0])
        for i, value in enumerate(counts):
            acc[i] += value * times

    def plain(
        self, name: str, elements: int, width: int, times: int = 1, draft: bool = False, resident: bool = True
    ) -> None:
        label = {BF16: "bf16", FP32: "fp32", INT64: "int64"}[width]
        self.add(name, label, (elements, elements, elements * width), times, draft, resident)

    def result(self) -> list[TensorGroup]:
        return [
            TensorGroup(name, p, e, b, precision, draft, resident)
            for (name, precision, draft, resident), (p, e, b) in self._acc.items()
        ]


def weight_groups(spec: ModelSpec, quant: QuantSpec) -> list[TensorGroup]:
    """The checkpoint's tensor groups for `quant` (the native layout when it is the model's own format)."""
    if quant.name == spec.native_dtype == "fp8" and spec.attention in ("mla", "mla-dsa"):
        return _v3_family(spec)
    if quant.name == spec.native_dtype == "fp4-fp8":
        return _v4(spec)
    return _uniform(spec, quant)


def _uniform(spec: ModelSpec, quant: QuantSpec) -> list[TensorGroup]:
    total, emb = known(spec.total_params, "total_params"), spec.embedding_params
    if not quant.embeddings_16bit:
        return [
            TensorGroup(
                "all weights",
                total,
                total,
                round(total * quant.bytes_per_weight),
                f"{quant.name} ({quant.bits_per_weight:.3f} bits/weight)",
            )
        ]
    body = total - emb
    return [
        TensorGroup("embedding + output head", emb, emb, emb * BF16, "bf16"),
        TensorGroup(
            "decoder layers",
            body,
            body,
            round(body * quant.bytes_per_weight),
            f"{quant.name} ({quant.bits_per_weight:.3f} bits/weight)",
        ),
    ]


def _v3_family(s: ModelSpec) -> list[TensorGroup]:
    """DeepSeek-V3 / R1 / V3.1 / V3.2 native FP8 checkpoint (V2 attention without q LoRA included)."""
    g = _Groups()
    h, heads, L = known(s.hidden_size), known(s.num_attention_heads), known(s.num_hidden_layers)
    rope, kvl = known(s.qk_rope_head_dim), known(s.kv_lora_rank)
    qk = known(s.qk_nope_head_dim) + rope
    fp8 = "fp8 e4m3 + fp32 scale per 128x128"
    g.plain("embedding + output head", s.vocab_size * h * 2, BF16)  # type: ignore[operator]
    g.plain("norms", h, BF16)  # final norm

    def layer(times: int, dense: bool, draft: bool) -> None:
        attn = [(s.q_lora_rank, h), (heads * qk, s.q_lora_rank)] if s.q_lora_rank else [(heads * qk, h)]
        attn += [(kvl + rope, h), (heads * (s.qk_nope_head_dim + s.v_head_dim), kvl), (h, heads * s.v_head_dim)]  # type: ignore[operator]
        for out, inp in attn:
            g.add("attention (MLA) projections", fp8, _fp8_v3(out, inp), times, draft)
        g.plain("norms", 2 * h + kvl + (s.q_lora_rank or 0), BF16, times, draft)
        if s.attention == "mla-dsa":
            ih, idim = known(s.index_n_heads), known(s.index_head_dim)
            g.add("sparse-attention indexer", fp8, _fp8_v3(ih * idim, known(s.q_lora_rank)), times, draft)
            g.add("sparse-attention indexer", fp8, _fp8_v3(idim, h), times, draft)
            g.plain("sparse-attention indexer", h * ih + 2 * idim, BF16, times, draft)
        if dense:
            inter = known(s.intermediate_size)
            for out, inp in ((inter, h), (inter, h), (h, inter)):
                g.add("dense MLP", fp8, _fp8_v3(out, inp), times, draft)
            return
        mi, routed, shared = known(s.moe_intermediate_size), known(s.n_routed_experts), known(s.n_shared_experts)
        for out, inp in ((mi, h), (mi, h), (h, mi)):
            g.add("draft MoE experts" if draft else "routed experts", fp8, _fp8_v3(out, inp), times * routed, draft)
            g.add(
                "shared experts",
                fp8,
                _fp8_v3(out * shared, inp) if out == mi else _fp8_v3(out, inp * shared),
                times,
                draft,
            )
        g.plain("router", routed * h, BF16, times, draft)
        g.plain("router", routed, FP32, times, draft)  # e_score_correction_bias

    dense = s.first_k_dense_replace or 0
    layer(dense, dense=True, draft=False)
    layer(L - dense, dense=False, draft=False)
    n = s.draft_blocks
    if n:
        layer(n, dense=False, draft=True)
        g.plain("MTP projections", 3 * h, BF16, n, draft=True)  # enorm, hnorm, shared_head.norm
        g.plain("MTP projections", h * 2 * h, BF16, n, draft=True)  # eh_proj (unquantized)
        g.plain("MTP embedding + head copies", s.vocab_size * h * 2, BF16, n, draft=True, resident=False)  # type: ignore[operator]
    return g.result()


def _v4(s: ModelSpec) -> list[TensorGroup]:
    """DeepSeek-V4 native FP4 + FP8 checkpoint (tensor names of the released inference/ layout)."""
    g = _Groups()
    h, heads, hd, L = known(s.hidden_size), known(s.num_attention_heads), known(s.head_dim), known(s.num_hidden_layers)
    hc, ih, idim = known(s.hc_mult), known(s.index_n_heads), known(s.index_head_dim)
    qr, og, olr = known(s.q_lora_rank), known(s.o_groups), known(s.o_lora_rank)
    mi, e = known(s.moe_intermediate_size), known(s.n_routed_experts)
    fp8 = "fp8 e4m3 + e8m0 scale per 128x128"
    g.plain("embedding + output head", s.vocab_size * h * 2, BF16)  # type: ignore[operator]
    g.plain("norms", h, BF16)
    g.plain("hyper-connections", hc * hc * h + hc + 1, FP32)  # hc_head fn/base/scale

    def block(index: int, ratio: int, draft: bool) -> None:
        for out, inp in ((qr, h), (heads * hd, qr), (hd, h), (og * olr, heads * hd // og), (h, og * olr)):
            g.add("attention projections", fp8, _fp8_v4(out, inp), 1, draft)
        g.plain("norms", qr + hd + 2 * h, BF16, 1, draft)
        g.plain("attention sinks", heads, FP32, 1, draft)
        mix = (2 + hc) * hc
        g.plain("hyper-connections", 2 * (mix * hc * h + mix + 3), FP32, 1, draft)
        if ratio:
            width = hd * (2 if ratio == 4 else 1)
            g.plain("KV compressor", 2 * width * h + hd, BF16, 1, draft)
            g.plain("KV compressor", ratio * width, FP32, 1, draft)
        if ratio == 4:
            g.add("sparse-attention indexer", fp8, _fp8_v4(ih * idim, qr), 1, draft)
            g.plain("sparse-attention indexer", ih * h + 2 * 2 * idim * h + idim, BF16, 1, draft)
            g.plain("sparse-attention indexer", 4 * 2 * idim, FP32, 1, draft)
        for out, inp in ((mi, h), (mi, h), (h, mi)):
            routed = "draft MoE experts" if draft else "routed experts"
            g.add(routed, "fp4 e2m1 + e8m0 scale per 32", _fp4(out, inp), e, draft)
            g.add("shared experts", fp8, _fp8_v4(out, inp), s.n_shared_experts, draft)  # type: ignore[arg-type]
        g.plain("router", e * h, BF16, 1, draft)
        if not draft and index < s.num_hash_layers:  # type: ignore[operator]
            g.plain("router", s.vocab_size * s.num_experts_per_tok, INT64, 1, draft)  # type: ignore[operator]  # tid2eid
        else:
            g.plain("router", e, FP32, 1, draft)  # gate bias
        if draft:
            for _ in range(2):  # e_proj, h_proj
                g.add("MTP projections", fp8, _fp8_v4(h, h), 1, draft)
            g.plain("MTP projections", 3 * h, BF16, 1, draft)  # enorm, hnorm, norm
            g.plain("MTP projections", hc * hc * h + hc + 1, FP32, 1, draft)

    ratios = s.compress_ratios or []
    for i in range(L):
        block(i, ratios[i], draft=False)
    for j in range(s.draft_blocks):
        block(L + j, ratios[L + j], draft=True)
    return g.result()


def weight_bytes(spec: ModelSpec, quant: QuantSpec, spec_decode: bool = False) -> int:
    """Bytes vLLM holds on the GPUs: every resident group, the draft's only with speculative decoding."""
    return sum(g.bytes for g in weight_groups(spec, quant) if g.resident and (spec_decode or not g.draft))


def checkpoint_bytes(spec: ModelSpec, quant: QuantSpec) -> int:
    """Bytes of the checkpoint's files' tensors (every group, draft and duplicates included)."""
    return sum(g.bytes for g in weight_groups(spec, quant))


def checkpoint_elements(spec: ModelSpec, quant: QuantSpec) -> int:
    """Tensor elements as stored, the figure the hub shows as a safetensors model's 'Model size'."""
    return sum(g.stored_elements for g in weight_groups(spec, quant))


def routed_expert_bytes(spec: ModelSpec, quant: QuantSpec) -> int:
    return sum(g.bytes for g in weight_groups(spec, quant) if g.name == "routed experts")
