"""Which checkpoint the engine loads for a quantization, and what vLLM needs to be told.

Policy for a quantization without published weights: a WARNING, not an error. The planner still
sizes it (the arithmetic does not depend on who made the checkpoint); the warning says how to get
the weights. Quantizations the engine applies while loading the original bf16 weights (vLLM: fp8; the
project's server: bnb-8bit and bnb-4bit) need no extra checkpoint at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.catalog import Gpu, ModelSpec
from infra.planner.quantization import QuantSpec


@dataclass(frozen=True)
class CheckpointSource:
    checkpoint: str | None  # repo the engine loads; None when none is published
    vllm_quantization: str | None  # value of vLLM --quantization, None when read from the checkpoint
    warnings: list[str] = field(default_factory=list)


def checkpoint_for(spec: ModelSpec, quant: QuantSpec, gpu: Gpu) -> CheckpointSource:
    warnings: list[str] = []
    if quant.needs_fp8_hardware and not gpu.fp8_native:
        warnings.append(
            f"{gpu.key} has no FP8 tensor cores: vLLM runs fp8 weights weight-only (W8A16 Marlin "
            "kernels), which saves memory but not compute"
        )
    if quant.name == spec.native_dtype:
        return CheckpointSource(spec.id, None, warnings)
    if spec.native_dtype == "bf16" and quant.runtime_vllm_flag:
        return CheckpointSource(spec.id, quant.runtime_vllm_flag, warnings)
    if quant.engine == "server":
        warnings.append(
            f"the pinned vLLM loads no {quant.name} weights (bitsandbytes and GGUF were removed, vLLM RFC "
            "#39583): this plan runs on the project's server, dsdeploy serve (chart engine.type server)"
        )
    if quant.engine == "server" and quant.name != "gguf-q4" and spec.native_dtype == "bf16":
        return CheckpointSource(spec.id, None, warnings)  # the server quantizes the bf16 weights while loading
    published = spec.published.get(quant.name, [])
    if quant.name == "gguf-q4" and published:
        warnings.append(
            f"download the Q4_K_M .gguf file from {published[0]} (merge split files with "
            "llama-gguf-split --merge) and serve it with dsdeploy serve --gguf-file"
        )
    if published:
        return CheckpointSource(published[0], None, warnings)
    if quant.name == "bf16":
        how = "convert the fp8 checkpoint with DeepSeek's inference/fp8_cast_bf16.py"
    else:
        how = f"produce them with {quant.producer}"
    warnings.append(
        f"no published {quant.name} weights of {spec.id} are recorded in the catalog: {how} and "
        "point the engine at that checkpoint"
    )
    return CheckpointSource(None, None, warnings)
