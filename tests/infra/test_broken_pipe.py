"""Output piped into a reader that stops early (`dsdeploy report ... | head -1`): no traceback."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from dsdeploy.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "--model", "r1-distill-qwen-7b", "--tier", "base", "--volume", "1e5"],
        ["cost", "--json"],
        ["plan", "--model", "r1-distill-qwen-7b", "--tier", "base", "--json"],
    ],
)
def test_a_closed_pipe_ends_the_command_quietly(argv):
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsdeploy", *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader is gone before the first write: every write hits a closed pipe
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
    assert proc.returncode == 141


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_main_returns_141_when_stdout_is_a_closed_pipe(monkeypatch):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["report", "--model", "r1-distill-qwen-7b", "--tier", "base", "--volume", "1e5"]) == 141
