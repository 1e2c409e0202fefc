"""Quantization formats: stored bits per weight (scales included) and how vLLM gets them.

Bits per weight include the format's scale/zero-point overhead:
- bf16       16
- fp8        8 + one fp32 scale per 128x128 block (DeepSeek-V3 format; per-channel dynamic is smaller)
             = 8 + 32/16384 = 8.002
- fp4-fp8    DeepSeek-V4's native mix: routed experts FP4 + one e8m0 scale per 32 (4.25 bits), the rest
             FP8 or bf16. Only V4 checkpoints come in it; the planner sizes it tensor group by group
             (tensors.py), the 4.25 here only ranks it among the 4-bit formats.
- int8       W8A8, 8 + one fp32 scale per output channel (~4096 weights) = 8 + 32/4096 = 8.008
- awq-int4   4 + (fp16 scale + 4-bit zero) per group of 128 = 4 + 20/128 = 4.156
- gptq-int4  4 + (fp16 scale + 4-bit zero) per group of 128 = 4.156 (g_idx is negligible)
- bnb-8bit   LLM.int8: 8 + one fp32 scale per row (~4096 weights) = 8.008
- bnb-4bit   NF4, 4 + one fp32 absmax per block of 64 (no double quantization, the transformers
             default) = 4 + 32/64 = 4.5
- gguf-q4    llama.cpp Q4_K_M: a mix of Q4_K (4.5 bpw) and Q6_K (6.5625 bpw, attn_v/ffn_down of half
             the layers and the output head); 4.85 bpw on average over the whole file
Embeddings and the output head stay 16-bit in every vLLM format except GGUF (and bf16 itself),
so the planner charges them 2 bytes per parameter.

Engine: the pinned vLLM (v0.32.0, infra/vllm_release.py) has no bitsandbytes and no GGUF loader (both
were deprecated by vllm-project/vllm RFC #39583 and are absent from its ``QuantizationMethods``; the
suite's flag check refuses ``--quantization bitsandbytes`` and ``gguf``), so those formats are served by
the project's server (``dsdeploy serve``, engine.type server), which loads them with bitsandbytes and
transformers' GGUF reader.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.catalog import QUANTIZATION_NAMES

QUANTIZATIONS: tuple[str, ...] = QUANTIZATION_NAMES


@dataclass(frozen=True)
class QuantSpec:
    name: str
    bits_per_weight: float
    embeddings_16bit: bool  # embeddings + output head kept at 2 bytes/param
    runtime_vllm_flag: str | None  # vLLM quantizes bf16 weights at load with this --quantization
    needs_fp8_hardware: bool = False
    engine: str = "vllm"  # the engine that loads this format: vllm, or server (dsdeploy serve)
    producer: str = ""  # how to make a checkpoint when none is published

    @property
    def bytes_per_weight(self) -> float:
        return self.bits_per_weight / 8


QUANT_SPECS: dict[str, QuantSpec] = {
    "bf16": QuantSpec("bf16", 16.0, embeddings_16bit=False, runtime_vllm_flag=None),
    "fp8": QuantSpec(
        "fp8",
        8 + 32 / (128 * 128),
        True,
        "fp8",
        needs_fp8_hardware=True,
        producer="llm-compressor (FP8_DYNAMIC scheme)",
    ),
    "fp4-fp8": QuantSpec(
        "fp4-fp8",
        4 + 8 / 32,
        True,
        None,
        needs_fp8_hardware=True,
        producer="DeepSeek (the format of the DeepSeek-V4 releases; no tool converts to it)",
    ),
    "int8": QuantSpec("int8", 8 + 32 / 4096, True, None, producer="llm-compressor (W8A8 int8 scheme)"),
    "awq-int4": QuantSpec("awq-int4", 4 + 20 / 128, True, None, producer="AutoAWQ / llm-compressor (AWQ, group 128)"),
    "gptq-int4": QuantSpec("gptq-int4", 4 + 20 / 128, True, None, producer="GPTQModel / llm-compressor (W4A16)"),
    "bnb-8bit": QuantSpec(
        "bnb-8bit",
        8 + 32 / 4096,
        True,
        None,
        engine="server",
        producer="transformers + bitsandbytes (load_in_8bit, then save_pretrained)",
    ),
    "bnb-4bit": QuantSpec(
        "bnb-4bit",
        4 + 32 / 64,
        True,
        None,
        engine="server",
        producer="transformers + bitsandbytes (load_in_4bit, then save_pretrained)",
    ),
    "gguf-q4": QuantSpec(
        "gguf-q4",
        4.85,
        embeddings_16bit=False,
        runtime_vllm_flag=None,
        engine="server",
        producer="llama.cpp convert_hf_to_gguf.py + llama-quantize Q4_K_M",
    ),
}

assert tuple(QUANT_SPECS) == QUANTIZATIONS
