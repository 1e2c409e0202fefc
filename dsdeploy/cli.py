"""The `dsdeploy` console command: wires the subcommands of each part of the project.

Each subcommand lives with the code it drives and exposes ``register(subparsers)``;
heavy imports (torch, pulumi, the router) happen only inside the chosen command, so
the router image can run ``dsdeploy route`` without torch or pulumi installed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Each module defines register(subparsers) and sets args.func on its parsers.
COMMAND_MODULES: tuple[str, ...] = (
    "infra.plan_command",  # dsdeploy plan
    "infra.chart_command",  # dsdeploy values / render
    "infra.images_command",  # dsdeploy images
    "inference.server.command",  # dsdeploy serve
    "inference.router.command",  # dsdeploy route
    "dsdeploy.local_command",  # dsdeploy local up / chat / smoke
    "infra.decision.command",  # dsdeploy cost / report
)


def key_value_pairs(items: list[str], option: str, example: str) -> dict[str, str]:
    """``KEY=VALUE`` arguments of a repeatable option as a dict; ValueError naming the option otherwise."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} {item!r}: expected KEY=VALUE, e.g. {example}")
        out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsdeploy",
        description="Run DeepSeek models on your own GPUs, with a local-first router and DeepSeek API fallback.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
                continue  # that part is not built yet / not installed in this image
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `dsdeploy report ... | head -1`: the reader is gone, stop quietly
        _discard_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the flush at exit does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured, closed): nothing to flush
        pass


if __name__ == "__main__":
    sys.exit(main())
