"""The server's API key (``$DSDEPLOY_ENGINE_KEY`` or ``--api-key``), as the chart runs it: every path but the
probes' and Prometheus' needs the key, and the real router, holding it, is the one caller that gets answers."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import httpx
import openai
import pytest

from inference.server.command import add_arguments, config_from_args
from tests.inference.router.harness import router_config, run_router
from tests.support.server_process import ServerProcess

MODEL_NAME = "smollm2"  # --served-model-name of the fixtures in conftest.py
KEY = "sk-engine-" + "5c0ffee5" * 4  # built in parts: a test key, not a leak
MSG = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def keyed_server(model_folder: Path):
    command = [
        sys.executable,
        "-m",
        "inference.server",
        "--model",
        str(model_folder),
        "--served-model-name",
        MODEL_NAME,
        "--max-model-len",
        "2048",
        "--threads",
        "1",
        "--max-num-seqs",
        "2",
    ]
    proc = ServerProcess(command, env={"HF_HUB_OFFLINE": "1", "DSDEPLOY_ENGINE_KEY": KEY}).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk-engine-wrong"}, {"Authorization": "Basic " + KEY}, {"Authorization": KEY}],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("GET", "/v1/models"),
        ("GET", f"/v1/models/{MODEL_NAME}"),
    ],
)
def test_v1_refuses_a_caller_without_the_key(keyed_server, headers: dict, method: str, path: str) -> None:
    body = {"model": MODEL_NAME, "messages": MSG, "prompt": "Hi", "max_tokens": 1} if method == "POST" else None
    r = httpx.request(method, keyed_server.url + path, json=body, headers=headers, timeout=30)
    assert r.status_code == 401, r.text
    error = r.json()["error"]
    assert error["code"] in ("missing_api_key", "invalid_api_key") and error["param"] is None
    assert KEY not in r.text and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
def test_probes_and_metrics_answer_without_the_key(keyed_server, path: str) -> None:
    assert httpx.get(keyed_server.url + path, timeout=30).status_code == 200


def test_the_key_is_checked_before_the_body_is_read(keyed_server) -> None:
    """A caller without the key cannot make the server buffer a body: the 401 comes right after the headers."""
    host, port = keyed_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n{"
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_the_holder_of_the_key_is_answered(keyed_server) -> None:
    client = openai.OpenAI(base_url=keyed_server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    answer = client.chat.completions.create(model=MODEL_NAME, messages=MSG, max_tokens=2)
    assert answer.choices[0].message.content is not None and answer.usage.completion_tokens >= 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed_server.url + "/v1", api_key="sk-other", max_retries=0).models.list()


def test_the_router_sends_the_engine_key(keyed_server, tmp_path: Path) -> None:
    """The real router, with the key as the chart gives it (upstreams[].api_key: ${DSDEPLOY_ENGINE_KEY}), is
    answered by the keyed server; the same router without the right key is refused by it, and says so."""
    upstream = {"url": keyed_server.url, "name": "engine", "api_key": "${DSDEPLOY_ENGINE_KEY}"}
    config = router_config([upstream], None, tmp_path / "audit.jsonl", environ={"DSDEPLOY_ENGINE_KEY": KEY})
    with run_router(config) as r:
        client = openai.OpenAI(base_url=r.v1, api_key="unused", max_retries=0, timeout=120)
        raw = client.chat.completions.with_raw_response.create(model=MODEL_NAME, messages=MSG, max_tokens=2)
        assert raw.headers["x-dsdeploy-route"] == "local" and raw.parse().choices[0].message.content is not None
        [line] = r.audit_lines(at_least=1)
        assert (line["route"], line["status"]) == ("local", 200)
    stale = router_config([upstream], None, tmp_path / "stale.jsonl", environ={"DSDEPLOY_ENGINE_KEY": "sk-stale"})
    with run_router(stale) as r:
        with pytest.raises(openai.APIStatusError) as info:
            openai.OpenAI(base_url=r.v1, api_key="unused", max_retries=0, timeout=120).chat.completions.create(
                model=MODEL_NAME, messages=MSG, max_tokens=2
            )
        assert info.value.status_code == 503 and "local_key_rejected" in info.value.message


def _config(argv: list[str], monkeypatch: pytest.MonkeyPatch, env: str | None):
    if env is None:
        monkeypatch.delenv("DSDEPLOY_ENGINE_KEY", raising=False)
    else:
        monkeypatch.setenv("DSDEPLOY_ENGINE_KEY", env)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(["--model", "m", *argv]))


def test_the_key_comes_from_the_environment_or_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _config([], monkeypatch, None).api_key is None
    assert _config([], monkeypatch, "from-env").api_key.get_secret_value() == "from-env"
    assert _config(["--api-key", "from-flag"], monkeypatch, "from-env").api_key.get_secret_value() == "from-flag"
    assert "from-env" not in repr(_config([], monkeypatch, "from-env"))


def test_an_empty_key_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from inference.server.command import run

    monkeypatch.setenv("DSDEPLOY_ENGINE_KEY", "  ")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(["--model", "m"])) == 2
    err = capsys.readouterr().err
    assert "--api-key: Value error, the key is empty" in err and "'  '" not in err
