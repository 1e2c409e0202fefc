"""The real vLLM (CPU build, the chart's release) serving SmolLM2, started once per test session.

Its first start takes minutes on two cores, so one engine serves every end-to-end test; a test that kills
it leaves it to ``VllmEngine.running()`` to start a new one for whoever comes next. It runs with the key
only the router holds (in ``VLLM_API_KEY``, behind the chart's key guard, as the chart runs it), DeepSeek
V3.1's reasoning parser (``deepseek_v3``: thinking on per request with ``chat_template_kwargs``), and a tokenizer in which two unused SmolLM2 special tokens are
named ``<think>`` and ``</think>``, so that vLLM's R1 parser, which looks those tokens up, runs on a model
that small. ``-O0`` skips torch.compile (about 5 of the 6 minutes of a cold start here); the API, the
parsers, the scheduler and the metrics are the same (benchmarks/bench_engines.py measures both).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inference.router.harness import FakeProcess
from tests.support.server_process import REPO_ROOT
from tests.support.vllm_engine import VllmServer

MODEL = "smollm2"
ENGINE_KEY = "sk-engine-" + os.urandom(12).hex()
# SmolLM2's <jupyter_start> / <jupyter_text> (ids 11 and 12), which chat never produces.
THINK_TOKENS = {11: "<think>", 12: "</think>"}
ENGINE_FLAGS = (
    "--served-model-name",
    MODEL,
    "--dtype",
    "bfloat16",
    "--max-model-len",
    "2048",
    "--max-num-seqs",
    "4",
    "--kv-cache-memory-bytes",
    "2G",
    "--reasoning-parser",
    "deepseek_v3",
    "--shutdown-timeout",  # as the chart starts it: SIGTERM drains the open requests (0, the default, aborts them)
    "30",
    "-O0",
)
STARTS: list[float] = []  # seconds each engine start took, shown at the end of the run


def think_tokenizer(model_folder: Path, dest: Path) -> Path:
    """A copy of the model's tokenizer with THINK_TOKENS renamed (ids and embeddings unchanged)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer_config.json", "chat_template.jinja", "config.json", "special_tokens_map.json"):
        if (model_folder / name).is_file():
            shutil.copy(model_folder / name, dest / name)
    data = json.loads((model_folder / "tokenizer.json").read_text())
    for token in data["added_tokens"]:
        if token["id"] in THINK_TOKENS:
            old, token["content"] = token["content"], THINK_TOKENS[token["id"]]
            vocab = data["model"]["vocab"]
            vocab[token["content"]] = vocab.pop(old)
    (dest / "tokenizer.json").write_text(json.dumps(data))
    return dest


class VllmEngine:
    """The session's engine; ``running()`` starts it again if a test killed it."""

    def __init__(self, model_folder: Path, tokenizer: Path) -> None:
        self.flags = (*ENGINE_FLAGS, "--tokenizer", str(tokenizer))
        self.model_folder = model_folder
        self.server: VllmServer | None = None

    def running(self) -> VllmServer:
        if self.server is not None and self.server.process is not None and self.server.process.poll() is None:
            return self.server
        if self.server is not None:
            self.server.stop()
        started = time.monotonic()
        self.server = VllmServer(
            self.model_folder,
            *self.flags,
            api_key=ENGINE_KEY,
            own_group=True,
            env={"VLLM_CACHE_ROOT": str(REPO_ROOT / ".cache" / "vllm")},
        ).start()
        STARTS.append(time.monotonic() - started)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    from inference.server.model_files import prepare_model_folder, smollm2_gguf_path

    return prepare_model_folder(smollm2_gguf_path(), REPO_ROOT / ".cache" / "models")


@pytest.fixture(scope="session")
def vllm_engine(smollm2_folder: Path, tmp_path_factory) -> Iterator[VllmEngine]:
    engine = VllmEngine(smollm2_folder, think_tokenizer(smollm2_folder, tmp_path_factory.mktemp("think-tokenizer")))
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture()
def engine(vllm_engine: VllmEngine) -> VllmServer:
    return vllm_engine.running()


@pytest.fixture(scope="session")
def cloud() -> Iterator[FakeProcess]:
    """The DeepSeek API stand-in (its own process), shared by the session."""
    proc = FakeProcess("cloud")
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture()
def deepseek(cloud: FakeProcess) -> FakeProcess:
    cloud.ensure_running()
    cloud.control(foreign_prefix="continue")  # a prefix completion goes on from the real engine's text
    return cloud


def pytest_terminal_summary(terminalreporter) -> None:
    if STARTS:
        shown = ", ".join(f"{s:.0f} s" for s in STARTS)
        terminalreporter.write_line(f"vLLM CPU engine (SmolLM2, -O0) start-up: {shown}")
