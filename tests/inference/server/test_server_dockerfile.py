"""inference/Dockerfile.server: CPU and CUDA variants, non-root, no model inside, serves on 0.0.0.0:8000.

(No Docker daemon in CI: the file is checked as text; its build steps mirror the package's `server` extra.)
"""

from __future__ import annotations

import re
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[3] / "inference" / "Dockerfile.server"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split()[0].upper(), line[len(line.split()[0]) :].strip()) for line in lines]


def test_two_variants_from_one_build_argument():
    text = DOCKERFILE.read_text()
    assert "ARG VARIANT=cpu" in text
    assert "cpu)" in text and "cuda)" in text
    assert "download.pytorch.org/whl/cpu" in text and "download.pytorch.org/whl/cu" in text
    assert '".[server]"' in text


def test_runs_as_non_root_without_a_model_inside():
    instructions = _instructions()
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    copies = " ".join(arg for op, arg in instructions if op in ("COPY", "ADD"))
    assert not re.search(r"\.(gguf|safetensors|bin)\b|models?/", copies)
    assert ("ENTRYPOINT", '["dsdeploy", "serve"]') in instructions
    cmd = next(arg for op, arg in instructions if op == "CMD")
    assert '"/models/model"' in cmd and '"0.0.0.0"' in cmd and '"8000"' in cmd
    assert any(op == "HEALTHCHECK" and "/health" in arg for op, arg in instructions)
