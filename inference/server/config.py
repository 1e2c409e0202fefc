"""Validated server settings (from `dsdeploy serve` flags or `python -m inference.server`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from inference.engines import ServerQuantization as Quantization

from .quantization import QUANTIZATIONS  # noqa: F401  (re-exported for the CLI)

API_KEY_ENV = "DSDEPLOY_ENGINE_KEY"  # where `dsdeploy serve` reads its API key when --api-key is not given


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="Local folder, .gguf file, or Hugging Face repo id.")
    gguf_file: str | None = Field(None, description="GGUF file name inside the folder or repo given by model.")
    quantization: Quantization = "none"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    served_model_name: str | None = None
    max_model_len: int | None = Field(None, ge=16)
    max_num_seqs: int = Field(32, ge=1, le=1024)
    max_queue: int = Field(128, ge=0)
    request_timeout: float = Field(600.0, gt=0, description="Seconds a request may take end to end.")
    drain_grace: float = Field(30.0, ge=0, description="Seconds in-flight requests get after SIGTERM.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    reasoning: Literal["auto", "on", "off"] = "auto"
    chat_template: str | None = Field(None, description="Path of a Jinja chat template replacing the model's.")
    cache_dir: str | None = Field(None, description="Where GGUF files are converted to (default ~/.cache/dsdeploy).")
    trust_remote_code: bool = False
    max_prefill_tokens: int | None = Field(
        None, ge=16, description="Padded prompt tokens per prefill pass (default 512 on CPU, 8192 on CUDA)."
    )
    prefix_cache_tokens: int = Field(4096, ge=0, description="Prompt-prefix KV kept for reuse, in tokens (0: off).")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice).")
    api_key: SecretStr | None = Field(
        None, description="Key every path but /health, /ready and /metrics requires (the router's)."
    )

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().strip():
            raise ValueError(f"the key is empty: give one, or leave both --api-key and ${API_KEY_ENV} unset")
        return v
