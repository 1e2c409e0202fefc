"""benchmarks/gpu_engine_check.py runs end to end on CPU with a tiny Qwen2 (the H200 run uses the same code)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu_engine_check.py"


@pytest.mark.slow
def test_gpu_engine_check_tiny_runs_bf16_and_bnb_4bit(tmp_path):
    out = tmp_path / "check.json"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tiny",
            "--batches",
            "1,4",
            "--new-tokens",
            "6",
            "--prompt-len",
            "12",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["architecture"]["num_hidden_layers"] == 2
    by_quant = {r["quantization"]: r for r in report["results"]}
    assert set(by_quant) == {"bf16", "bnb-4bit"}
    for result in by_quant.values():
        assert result["memory_footprint_bytes"] > 0
        assert [d["batch"] for d in result["decode"]] == [1, 4]
        assert all(d["generated_tokens"] == d["batch"] * 6 for d in result["decode"])
        # the engine's step time and a bare forward step of the same model, side by side
        assert all(
            d["engine_ms_per_step"] > 0 and d["bare_ms_per_step"] > 0 and d["engine_over_bare"] > 0
            for d in result["decode"]
        )
    assert report["torch_threads"] == 1  # --tiny: one thread unless told otherwise


def test_architecture_comes_from_the_catalog():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_engine_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    arch, source = gpu_engine_check.architecture(tiny=False)
    assert arch == gpu_engine_check.FALLBACK_ARCH
    assert source == "catalog"


BLOCK_WEB_STACK = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"pydantic", "prometheus_client", "fastapi", "starlette", "uvicorn"}:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_gpu_engine_check_needs_only_torch_transformers_and_bitsandbytes(tmp_path):
    out = tmp_path / "check.json"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_WEB_STACK,
            str(SCRIPT),
            "--tiny",
            "--batches",
            "2",
            "--new-tokens",
            "3",
            "--prompt-len",
            "8",
            "--quantizations",
            "bnb-4bit",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["results"][0]["decode"][0]["generated_tokens"] == 6
