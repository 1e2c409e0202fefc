"""`dsdeploy serve` / `python -m inference.server` flags: bad values fail fast with a clear message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from inference.server.command import add_arguments, config_from_args


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inference.server", *args], capture_output=True, text=True, timeout=120
    )


def test_defaults_parse_into_a_config():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--model", "m", "--max-num-seqs", "4", "--quantization", "bnb-4bit"]))
    assert config.model == "m" and config.max_num_seqs == 4 and config.quantization == "bnb-4bit"
    assert config.host == "127.0.0.1" and config.port == 8000 and config.max_queue == 128


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "m", "--max-num-seqs", "0"], ["--max-num-seqs", "0", "greater than or equal to 1"]),
        (["--model", "m", "--port", "70000"], ["--port", "70000"]),
        (["--model", "m", "--quantization", "int3"], ["--quantization", "int3", "bnb-4bit"]),
        (["--model", "/no/such/model/folder"], ["/no/such/model/folder", "no such file"]),
    ],
)
def test_bad_flags_exit_nonzero_with_a_clear_message(args, words):
    result = _run(*args)
    assert result.returncode != 0
    for word in words:
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_dsdeploy_cli_registers_serve():
    from dsdeploy.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "x"])
    assert args.func.__module__ == "inference.server.command"
