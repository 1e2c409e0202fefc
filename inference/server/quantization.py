"""from_pretrained arguments per quantization and device. Needs only torch and transformers (the GPU
check script imports it on a machine without the server's web stack)."""

from __future__ import annotations

from inference.engines import SERVER_QUANTIZATIONS as QUANTIZATIONS


class QuantizationError(ValueError):
    """An unknown quantization name."""


def load_kwargs(quantization: str, device: str) -> dict:
    """from_pretrained keyword arguments for a quantization on a device."""
    import torch
    from transformers import BitsAndBytesConfig

    full = torch.float32 if device == "cpu" else "auto"
    compute = torch.float32 if device == "cpu" else torch.bfloat16
    kwargs: dict = {"device_map": {"": device}}
    if quantization == "none":
        kwargs["dtype"] = full
    elif quantization == "bf16":
        kwargs["dtype"] = torch.bfloat16
    elif quantization == "fp16":
        kwargs["dtype"] = torch.float16
    elif quantization == "bnb-8bit":
        kwargs["dtype"] = torch.float32 if device == "cpu" else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    elif quantization == "bnb-4bit":
        kwargs["dtype"] = compute
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=True,
        )
    else:
        raise QuantizationError(f"quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
    return kwargs
