"""The GGUF -> safetensors conversion cache and the model source rules."""

from __future__ import annotations

import time

import pytest

from inference.server.config import ServerConfig
from inference.server.loading import resolve_source
from inference.server.model_files import ModelFileError, prepare_model_folder, smollm2_gguf_path
from inference.server.quantization import QuantizationError, load_kwargs


def test_smollm2_gguf_is_found():
    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_conversion_is_cached(model_folder):
    assert (model_folder / "model.safetensors").is_file()
    assert (model_folder / "config.json").is_file()
    assert "quantization_config" not in (model_folder / "config.json").read_text()
    started = time.perf_counter()
    assert prepare_model_folder(smollm2_gguf_path(), model_folder.parent) == model_folder
    assert time.perf_counter() - started < 5  # no second conversion


def test_bad_model_paths_are_named(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        prepare_model_folder(tmp_path / "missing.gguf", tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(ModelFileError, match="not a .gguf"):
        prepare_model_folder(text, tmp_path)
    with pytest.raises(ModelFileError, match="not a .gguf"):
        resolve_source(ServerConfig(model=str(text)))
    with pytest.raises(ModelFileError, match="no config.json"):
        resolve_source(ServerConfig(model=str(tmp_path)))
    with pytest.raises(ModelFileError, match="not a Hugging Face repo id"):
        resolve_source(ServerConfig(model="./no/such/folder"))


def test_sources_resolve(model_folder):
    assert resolve_source(ServerConfig(model=str(model_folder))) == (str(model_folder), model_folder.name)
    assert resolve_source(ServerConfig(model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")) == (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    )


def test_quantization_load_arguments():
    import torch

    assert load_kwargs("none", "cpu")["dtype"] is torch.float32
    assert load_kwargs("bf16", "cuda")["dtype"] is torch.bfloat16
    eight = load_kwargs("bnb-8bit", "cuda")["quantization_config"]
    assert eight.load_in_8bit
    four = load_kwargs("bnb-4bit", "cuda")["quantization_config"]
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_compute_dtype is torch.bfloat16
    with pytest.raises(QuantizationError, match="gguf-q4"):
        load_kwargs("gguf-q4", "cpu")


def test_gguf_file_and_gguf_in_folder_resolve_to_the_cached_conversion(model_folder):
    gguf = smollm2_gguf_path()
    cache = str(model_folder.parent)
    assert resolve_source(ServerConfig(model=str(gguf), cache_dir=cache)) == (str(model_folder), gguf.stem)
    assert resolve_source(ServerConfig(model=str(gguf.parent), gguf_file=gguf.name, cache_dir=cache)) == (
        str(model_folder),
        gguf.stem,
    )
