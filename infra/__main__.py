"""Pulumi entry point (``main: infra/`` in Pulumi.yaml): read the config, build, export. Nothing else."""

import sys
from pathlib import Path

import pulumi

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `infra` importable without an install

from infra.program import build  # noqa: E402
from infra.stack_config import read_pulumi_config  # noqa: E402

config, secrets = read_pulumi_config()
for name, value in build(config, secrets).items():
    pulumi.export(name, value)
