"""Fixtures: the real SmolLM2 model, converted once per session, served by a real server process."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:  # make `tests.support` importable without a rootdir conftest
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.server_process import ServerProcess  # noqa: E402

MODEL_NAME = "smollm2"
CACHE_DIR = REPO_ROOT / ".cache" / "models"
THINK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


@pytest.fixture(scope="session")
def model_folder() -> Path:
    from inference.server.model_files import prepare_model_folder, smollm2_gguf_path

    return prepare_model_folder(smollm2_gguf_path(), CACHE_DIR)


def server_command(folder: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "inference.server",
        "--model",
        str(folder),
        "--served-model-name",
        MODEL_NAME,
        "--max-model-len",
        "2048",
        "--threads",
        "1",
        "--log-level",
        "info",
        *extra,
    ]


def start_server(folder: Path, *extra: str) -> ServerProcess:
    return ServerProcess(server_command(folder, *extra), env={"HF_HUB_OFFLINE": "1"}).start()


@pytest.fixture
def server_factory(model_folder: Path):
    """Start extra servers for one test (stopped afterwards): ``server_factory("--drain-grace", "20")``."""
    started: list[ServerProcess] = []

    def factory(*extra: str) -> ServerProcess:
        started.append(start_server(model_folder, *extra))
        return started[-1]

    yield factory
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def server(model_folder: Path):
    """The main server, shared by the whole session: 16 batch slots, a queue of 64."""
    proc = start_server(model_folder, "--max-num-seqs", "16", "--max-queue", "64")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def tokenizer(model_folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_folder))


@pytest.fixture(scope="session")
def small_server(model_folder: Path, tmp_path_factory):
    """One batch slot, a queue of one, a 4 s request timeout, and the reasoning parser forced on with a
    chat template that opens a <think> block (as the R1 distills' templates do)."""
    template = tmp_path_factory.mktemp("template") / "think.jinja"
    template.write_text(THINK_TEMPLATE)
    proc = start_server(
        model_folder,
        "--max-num-seqs",
        "1",
        "--max-queue",
        "1",
        "--request-timeout",
        "4",
        "--reasoning",
        "on",
        "--chat-template",
        str(template),
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def loaded_model(model_folder: Path):
    """The model loaded in the test process, for servers whose engine a test reaches into (one torch thread)."""
    from inference.server.config import ServerConfig
    from inference.server.loading import load_model

    return load_model(
        ServerConfig(model=str(model_folder), served_model_name=MODEL_NAME, max_model_len=2048, threads=1)
    )


class InProcessServer:
    """The real app under uvicorn on 127.0.0.1, in a thread of the test process, so that a test can reach
    its runtime and engine (break the engine, slow the tokenizer) while clients talk HTTP to it."""

    def __init__(self, loaded, model: str, **config) -> None:
        import uvicorn

        from inference.server.api.app import create_app
        from inference.server.config import ServerConfig
        from inference.server.runtime import Runtime
        from tests.support.server_process import free_port

        settings = ServerConfig(model=model, served_model_name=MODEL_NAME, max_model_len=2048, **config)
        self.runtime = Runtime.build(settings, loaded)
        self.app = create_app(self.runtime)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1)
        )
        self._thread = threading.Thread(target=self._server.run, name="test-uvicorn", daemon=True)

    def start(self) -> InProcessServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline and self._thread.is_alive(), "in-process server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)


@pytest.fixture
def inprocess_server(loaded_model, model_folder: Path):
    """``inprocess_server(request_timeout=2)`` starts one (stopped after the test)."""
    started: list[InProcessServer] = []

    def factory(**config) -> InProcessServer:
        started.append(InProcessServer(loaded_model, str(model_folder), **config).start())
        return started[-1]

    yield factory
    for server in started:
        server.stop()
