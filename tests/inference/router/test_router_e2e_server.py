"""End to end: the real model server (SmolLM2) behind the router, the real openai client."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

from .harness import router_config, run_router

REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from inference.engines import READY_PATHS, SERVER  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402

pytestmark = pytest.mark.slow


def server_process() -> ServerProcess:
    from inference.server.model_files import prepare_model_folder, smollm2_gguf_path

    folder = prepare_model_folder(smollm2_gguf_path(), REPO_ROOT / ".cache" / "models")
    return ServerProcess(
        [
            sys.executable,
            "-m",
            "inference.server",
            "--model",
            str(folder),
            "--served-model-name",
            "smollm2",
            "--max-model-len",
            "1024",
            "--threads",
            "1",
            "--log-level",
            "warning",
        ],
        env={"HF_HUB_OFFLINE": "1"},
        start_timeout=240,
    )


@pytest.fixture(scope="module")
def real_server():
    proc = server_process().start()
    yield proc
    proc.stop()


def _until(check, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def test_a_sigtermed_server_leaves_the_pool_at_once_and_finishes_its_stream(ups, tmp_path):
    """The path the chart and `local up` give the router for our server (READY_PATHS): /ready turns 503 at the
    SIGTERM, so new requests skip the draining server (not one failed attempt) while its open stream ends whole.
    On /health (200 until the process exits) the public request below was sent to it first and met a 503."""
    server = server_process().start()
    try:
        cfg = router_config([server.url], ups["cloud"].url, tmp_path / "a.jsonl", health={"path": READY_PATHS[SERVER]})
        with run_router(cfg) as r:
            up = r.app.pool.upstreams[0]
            client = openai.OpenAI(base_url=r.v1, api_key="unused", max_retries=0, timeout=120)
            out: dict = {}

            def stream() -> None:
                chunks = client.chat.completions.create(
                    model="smollm2",
                    messages=[{"role": "user", "content": "Count from 1 to 100."}],
                    max_tokens=40,
                    temperature=0,
                    stream=True,
                    extra_body={"ignore_eos": True},
                )
                out["finish"] = [c.choices[0].finish_reason for c in chunks if c.choices][-1]

            long = threading.Thread(target=stream)
            long.start()
            _until(lambda: len(up.streams) == 1, "the stream relayed")
            server.signal(signal.SIGTERM)
            _until(lambda: not up.healthy, "the draining server out of the pool")
            assert long.is_alive()  # it still streams
            public = client.with_options(default_headers={"X-Data-Class": "public"})
            raw = public.chat.completions.with_raw_response.create(
                model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=4
            )
            assert raw.headers["x-dsdeploy-route"] == "cloud"
            long.join(120)
            assert out.get("finish") == "length"  # whole: all 40 tokens
            lines = {line["data_class"]: line for line in r.audit_lines(at_least=2)}
            assert lines["public"]["failures"] == []  # the draining server was not tried
            assert lines["internal"]["route"] == "local" and lines["internal"]["status"] == 200
        assert server.wait(60) == 0  # it exited once its stream was done
    finally:
        server.stop()


def test_real_server_behind_router_then_cloud_when_it_stops(real_server, ups, tmp_path):
    cfg = router_config([real_server.url], ups["cloud"].url, tmp_path / "audit.jsonl")
    with run_router(cfg) as r:
        client = openai.OpenAI(base_url=r.v1, api_key="unused", max_retries=0, timeout=120)
        assert "smollm2" in [m.id for m in client.models.list()]
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
        )
        answer = raw.parse()
        assert raw.headers["x-dsdeploy-route"] == "local"
        assert answer.choices[0].message.content and answer.usage.completion_tokens >= 1
        stream = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Count: one, two,"}], max_tokens=8, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        line = r.audit_lines(at_least=2)[-1]
        assert line["route"] == "local" and line["completion_tokens"] >= 1
        real_server.stop()
        public = client.with_options(default_headers={"X-Data-Class": "public"})
        raw = public.chat.completions.with_raw_response.create(
            model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
        )
        assert raw.headers["x-dsdeploy-route"] == "cloud"
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "x"}], max_tokens=4)
        assert info.value.status_code == 503
    assert [req["body"]["model"] for req in ups["cloud"].requests()] == ["deepseek-chat"]
