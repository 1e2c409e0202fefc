"""The vLLM flags a plan runs with, and what the pinned vLLM release can serve where.

The pinned engine is vLLM 0.32.0 (the chart's image tag). Every flag comes from the model's `vllm`
block in the catalog, which cites vLLM's own registries: reasoning parsers (vllm/reasoning/__init__.py),
tool parsers (vllm/tool_parsers/__init__.py), tokenizer modes (vllm/tokenizers/registry.py),
speculative methods (vllm/config/speculative.py) and the GPU generations its sparse-attention kernels
support (vllm/v1/attention/backends/mla/*: FlashMLA sparse needs compute capability 9.x or 10.x).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from infra.catalog import Gpu, ModelSpec
from infra.planner.sizing import MAX_NUM_BATCHED_TOKENS, Fit

if TYPE_CHECKING:
    from infra.planner.multinode import MultiNodeFit

VLLM_VERSION = "0.32.0"
GENERATIONS = ("ampere", "ada", "hopper", "blackwell")  # oldest first
NO_VLLM_METHOD = {  # quantizations whose vLLM method the pinned release no longer has
    "gguf-q4": "gguf",
    "bnb-4bit": "bitsandbytes",
    "bnb-8bit": "bitsandbytes",
}


def unsupported_gpu(spec: ModelSpec, gpu: Gpu) -> str | None:
    """Why vLLM cannot run `spec` on `gpu` (None when it can)."""
    need = spec.vllm.min_architecture
    if GENERATIONS.index(gpu.architecture) >= GENERATIONS.index(need):
        return None
    return (
        f"vLLM {VLLM_VERSION} has no kernels for {spec.id} on {gpu.key} ({gpu.architecture}): its "
        f"sparse-attention backends need a {need} or newer GPU (compute capability 9.0+)"
    )


def speculative_decoding(spec: ModelSpec, quant: str) -> str | None:
    """The speculative method the plan runs: the native checkpoint's own draft (MTP layer or DSpark),
    which community re-quantizations do not carry."""
    if spec.vllm.speculative and quant == spec.native_dtype:
        return spec.vllm.speculative
    return None


def speculative_config(spec: ModelSpec) -> str:
    config: dict[str, object] = {
        "method": spec.vllm.speculative,
        "num_speculative_tokens": spec.vllm.num_speculative_tokens,
    }
    if spec.vllm.draft_sample_method:
        config["draft_sample_method"] = spec.vllm.draft_sample_method
    return json.dumps(config, separators=(",", ":"))


def _utilization_flag(utilization: float) -> str:
    """0.9 -> "0.90"; a finer value is passed as given (never rounded up past what was planned)."""
    return f"{utilization:.2f}" if round(utilization, 2) == utilization else repr(utilization)


def engine_args(
    spec: ModelSpec,
    fit: Fit | MultiNodeFit,
    utilization: float,
    seqs: int,
    vllm_quant: str | None,
    speculative: str | None,
) -> list[str]:
    args = [
        "--tensor-parallel-size",
        str(fit.tp),
        "--max-model-len",
        str(fit.context),
        "--gpu-memory-utilization",
        _utilization_flag(utilization),
        "--max-num-seqs",
        str(seqs),
        "--max-num-batched-tokens",
        str(MAX_NUM_BATCHED_TOKENS),
    ]
    if vllm_quant:
        args += ["--quantization", vllm_quant]
    v = spec.vllm
    if v.reasoning_parser:
        args += ["--reasoning-parser", v.reasoning_parser]
    if v.tokenizer_mode:
        args += ["--tokenizer-mode", v.tokenizer_mode]
    if v.tool_call_parser:
        args += ["--tool-call-parser", v.tool_call_parser, "--enable-auto-tool-choice"]
    if v.kv_cache_dtype:
        args += ["--kv-cache-dtype", v.kv_cache_dtype]
    if v.block_size:
        args += ["--block-size", str(v.block_size)]
    if speculative:
        args += ["--speculative-config", speculative_config(spec)]
    return args


def engine_warnings(spec: ModelSpec, quant: str) -> list[str]:
    warnings = list(spec.vllm.notes)
    if quant in NO_VLLM_METHOD:
        warnings.append(
            f"vLLM {VLLM_VERSION} has no '{NO_VLLM_METHOD[quant]}' quantization method (it is not in "
            "vllm.model_executor.layers.quantization.QUANTIZATION_METHODS): serve this quantization with the "
            "project's server engine (engine type 'server'), or choose another quantization for vLLM"
        )
    if spec.vllm.speculative and quant != spec.native_dtype:
        warnings.append(
            f"speculative decoding ({spec.vllm.speculative}) is planned only with the native "
            f"{spec.native_dtype} checkpoint, whose draft layers the {quant} re-quantizations do "
            "not carry"
        )
    return warnings
