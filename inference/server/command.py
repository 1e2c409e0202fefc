"""`dsdeploy serve`: the OpenAI-compatible model server. Heavy imports happen inside ``run``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pydantic import ValidationError

from .config import API_KEY_ENV as KEY_ENV
from .config import QUANTIZATIONS, ServerConfig

_DEFAULTS = ServerConfig.model_fields


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = {name: field.default for name, field in _DEFAULTS.items()}
    parser.add_argument("--model", required=True, help="local folder, .gguf file, or Hugging Face repo id")
    parser.add_argument("--gguf-file", help="GGUF file name inside the --model folder or repo")
    parser.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default=d["quantization"],
        help="none = full precision (float32 on CPU, checkpoint dtype on CUDA)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d["device"])
    parser.add_argument("--host", default=d["host"])
    parser.add_argument("--port", type=int, default=d["port"])
    parser.add_argument("--served-model-name", help="model name in the API (default: folder or file name)")
    parser.add_argument("--max-model-len", type=int, help="context length (default: the model's maximum)")
    parser.add_argument(
        "--max-num-seqs", type=int, default=d["max_num_seqs"], help="sequences generated together in one batch"
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=d["max_queue"],
        help="requests allowed to wait for a batch slot; beyond that: 429 with Retry-After",
    )
    parser.add_argument(
        "--max-prefill-tokens",
        type=int,
        help="padded prompt tokens per prefill pass (default 512 on CPU, 8192 on CUDA)",
    )
    parser.add_argument(
        "--prefix-cache-tokens",
        type=int,
        default=d["prefix_cache_tokens"],
        help="prompt-prefix KV kept for reuse, in tokens (0 turns the prefix cache off)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=d["request_timeout"],
        help="seconds a request may take end to end (then 504)",
    )
    parser.add_argument(
        "--drain-grace",
        type=float,
        default=d["drain_grace"],
        help="seconds in-flight requests get to finish after SIGTERM",
    )
    parser.add_argument("--max-body-bytes", type=int, default=d["max_body_bytes"])
    parser.add_argument(
        "--reasoning",
        choices=("auto", "on", "off"),
        default=d["reasoning"],
        help="return <think> text as reasoning_content (auto: on for DeepSeek-R1 models)",
    )
    parser.add_argument("--chat-template", help="Jinja file replacing the model's chat template")
    parser.add_argument("--cache-dir", help="where GGUF files are converted to (default ~/.cache/dsdeploy/models)")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    parser.add_argument(
        "--api-key",
        help=f"require 'Authorization: Bearer KEY' on every path but /health, /ready "
        f"and /metrics (default: ${KEY_ENV}; prefer the variable: a flag shows in the process list)",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(func=run)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible model server",
        description="Serve a model over an OpenAI-compatible HTTP API.",
    )
    add_arguments(parser)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    fields = {name: getattr(args, name) for name in _DEFAULTS if getattr(args, name, None) is not None}
    key = fields.get("api_key", os.environ.get(KEY_ENV))
    if key is not None:
        fields["api_key"] = key
    return ServerConfig(**fields)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]).replace("_", "-")
        shown = "" if field == "api-key" else f" {first.get('input')!r}"  # never echo a key
        print(f"dsdeploy serve: --{field}{shown}: {first['msg']}", file=sys.stderr)
        return 2

    from .loading import load_model
    from .model_files import ModelFileError
    from .runtime import Runtime
    from .serving import serve

    try:
        loaded = load_model(config)
    except (ModelFileError, OSError) as exc:
        print(f"dsdeploy serve: cannot load the model: {exc}", file=sys.stderr)
        return 1
    return serve(Runtime.build(config, loaded), log_level=args.log_level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.server", description="dsdeploy model server")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return args.func(args)
