"""End to end: the real model server (SmolLM2) behind the router, the real openai client."""

from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest

from .harness import router_config, run_router

REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.server_process import ServerProcess  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_server():
    from inference.server.model_files import prepare_model_folder, smollm2_gguf_path

    folder = prepare_model_folder(smollm2_gguf_path(), REPO_ROOT / ".cache" / "models")
    proc = ServerProcess([sys.executable, "-m", "inference.server", "--model", str(folder), "--served-model-name",
                          "smollm2", "--max-model-len", "1024", "--threads", "1", "--log-level", "warning"],
                         env={"HF_HUB_OFFLINE": "1"}, start_timeout=240).start()
    yield proc
    proc.stop()


def test_real_server_behind_router_then_cloud_when_it_stops(real_server, ups, tmp_path):
    cfg = router_config([real_server.url], ups["cloud"].url, tmp_path / "audit.jsonl")
    with run_router(cfg) as r:
        client = openai.OpenAI(base_url=r.v1, api_key="unused", max_retries=0, timeout=120)
        assert "smollm2" in [m.id for m in client.models.list()]
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0)
        answer = raw.parse()
        assert raw.headers["x-dsdeploy-route"] == "local"
        assert answer.choices[0].message.content and answer.usage.completion_tokens >= 1
        stream = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Count: one, two,"}], max_tokens=8, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        line = r.audit_lines(at_least=2)[-1]
        assert line["route"] == "local" and line["completion_tokens"] >= 1
        real_server.stop()
        public = client.with_options(default_headers={"X-Data-Class": "public"})
        raw = public.chat.completions.with_raw_response.create(
            model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8)
        assert raw.headers["x-dsdeploy-route"] == "cloud"
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "x"}], max_tokens=4)
        assert info.value.status_code == 503
    assert [req["body"]["model"] for req in ups["cloud"].requests()] == ["deepseek-chat"]
