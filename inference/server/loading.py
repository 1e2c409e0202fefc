"""Load a model for serving: local folder, GGUF file (converted once and cached), or Hugging Face id,
in full precision, bf16/fp16, or bitsandbytes 8-bit / 4-bit (nf4)."""

from __future__ import annotations

import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .config import ServerConfig
from .model_files import ModelFileError, prepare_model_folder
from .quantization import load_kwargs

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_REASONING_NAME = re.compile(r"deepseek[-_]?r1|r1[-_]distill", re.IGNORECASE)


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    device: str
    served_model_name: str
    max_model_len: int
    eos_ids: set[int]
    pad_id: int
    weight_bytes: int
    reasoning: bool
    source: str


def resolve_source(config: ServerConfig) -> tuple[str, str]:
    """Return (what to pass to from_pretrained, default served name)."""
    path = Path(config.model).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelFileError(f"--model {config.model!r} is a file but not a .gguf file; give a folder or a .gguf")
        return str(prepare_model_folder(path, config.cache_dir)), path.stem
    if path.is_dir():
        if config.gguf_file:
            return str(prepare_model_folder(path / config.gguf_file, config.cache_dir)), Path(config.gguf_file).stem
        if not (path / "config.json").is_file():
            raise ModelFileError(f"--model {config.model!r} has no config.json (pass --gguf-file for a GGUF folder)")
        return str(path), path.name
    if _REPO_ID.match(config.model) and not config.model.startswith((".", "/")):
        if config.gguf_file:
            from huggingface_hub import hf_hub_download

            gguf = hf_hub_download(config.model, config.gguf_file)  # honours HF_HUB_OFFLINE
            return str(prepare_model_folder(gguf, config.cache_dir)), Path(config.gguf_file).stem
        return config.model, config.model
    raise ModelFileError(f"--model {config.model!r}: no such file or folder, and not a Hugging Face repo id")


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelFileError("--device cuda: no CUDA device is available")
    return requested


def is_reasoning_model(name: str, model_config) -> bool:
    """R1 distills and R1 itself think in <think>...</think>; recognised by name."""
    names = [name, str(getattr(model_config, "_name_or_path", "") or "")]
    return any(_REASONING_NAME.search(n) for n in names)


def load_model(config: ServerConfig) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if config.threads:
        torch.set_num_threads(config.threads)
    # bitsandbytes on CPU warns on every 8-bit matmul that it casts float32 inputs to float16
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
    logging.getLogger("bitsandbytes.autograd._functions").addFilter(
        lambda record: "MatMul8bitLt" not in record.getMessage()
    )
    started = time.monotonic()
    source, default_name = resolve_source(config)
    device = pick_device(config.device)
    log.info("loading %s on %s (quantization %s)", source, device, config.quantization)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=config.trust_remote_code)
    if config.chat_template:
        tokenizer.chat_template = Path(config.chat_template).read_text()
    model = AutoModelForCausalLM.from_pretrained(
        source, trust_remote_code=config.trust_remote_code, **load_kwargs(config.quantization, device)
    )
    model.eval()
    model_max = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 4096
    max_model_len = config.max_model_len or model_max
    if max_model_len > model_max:
        raise ModelFileError(f"--max-model-len {max_model_len} exceeds the model's maximum of {model_max}")
    eos = model.generation_config.eos_token_id if model.generation_config else None
    eos = eos if eos is not None else tokenizer.eos_token_id
    eos_ids = {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids, default=0)
    weight_bytes = int(model.get_memory_footprint())
    name = config.served_model_name or default_name
    reasoning = config.reasoning == "on" or (config.reasoning == "auto" and is_reasoning_model(name, model.config))
    log.info(
        "loaded %s in %.1f s: weights %.1f MiB on %s, max_model_len %d, reasoning parser %s",
        name,
        time.monotonic() - started,
        weight_bytes / 2**20,
        device,
        max_model_len,
        "on" if reasoning else "off",
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        served_model_name=name,
        max_model_len=max_model_len,
        eos_ids=eos_ids,
        pad_id=int(pad_id),
        weight_bytes=weight_bytes,
        reasoning=reasoning,
        source=source,
    )
