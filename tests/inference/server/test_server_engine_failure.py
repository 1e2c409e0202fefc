"""When the engine cannot answer: its thread dies, it hangs in a step, or a prompt takes long to prepare.

Against the real app and model on 127.0.0.1, served from the test process so that a test can break the
engine (replace one of its methods) while clients talk HTTP to it.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.inference.server.http_threads import Post, Stream
from tests.support.prometheus_text import value

pytestmark = pytest.mark.slow

MODEL_NAME = "smollm2"  # --served-model-name of the fixtures in conftest.py
LONG = {
    "model": MODEL_NAME,
    "messages": [{"role": "user", "content": "Count to one thousand."}],
    "max_tokens": 1000,
    "ignore_eos": True,
    "temperature": 0,
}


def _injected(*_args, **_kwargs):
    raise RuntimeError("injected engine fault")


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_a_dead_engine_fails_open_requests_and_health_and_ready_say_so(inprocess_server, monkeypatch):
    server = inprocess_server()
    engine = server.runtime.engine
    stream, whole = Stream(server.url, LONG), Post(server.url, LONG)
    stream.start()
    whole.start()
    assert stream.first_token.wait(60)
    _wait(lambda: engine.num_running == 2)

    # a step fails, and so does failing its requests: the exception escapes the loop and ends the thread
    monkeypatch.setattr(engine, "_step", _injected)
    monkeypatch.setattr(engine, "_fail_all", _injected)
    stream.join(30)
    whole.join(30)

    assert stream.events[-1] == "[DONE]"
    error = stream.events[-2]["error"]
    assert error["code"] == "engine_failed" and error["type"] == "server_error", error
    assert whole.response.status_code == 500
    assert whole.response.json()["error"]["code"] == "engine_failed"
    assert not engine.alive
    for path in ("/health", "/ready"):
        response = httpx.get(server.url + path, timeout=10)
        assert response.status_code == 503 and response.json()["error"]["code"] == "engine_failed", path
    refused = httpx.post(server.url + "/v1/chat/completions", json={**LONG, "max_tokens": 2}, timeout=10)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_failed"
    assert value(server.url + "/metrics", "dsdeploy_server_ready") == 0


def test_a_hung_engine_cannot_hold_requests_past_their_deadline(inprocess_server, monkeypatch):
    """The engine enforces deadlines only between steps; a step that never ends must not hold requests."""
    server = inprocess_server(request_timeout=1)
    server.runtime.backstop_s = 0.5
    engine = server.runtime.engine
    release = threading.Event()
    real_step = engine._step

    def hung_step() -> None:
        release.wait(60)
        real_step()

    monkeypatch.setattr(engine, "_step", hung_step)
    try:
        stream, whole = Stream(server.url, LONG), Post(server.url, LONG)
        stream.start()
        whole.start()
        stream.join(30)
        whole.join(30)
        assert not stream.is_alive() and not whole.is_alive()
        assert whole.response.status_code == 504
        assert whole.response.json()["error"]["code"] == "request_timeout"
        assert stream.events[-1] == "[DONE]"
        assert stream.events[-2]["error"]["code"] == "request_timeout"
        assert stream.events[-2]["error"]["type"] == "timeout_error"
        assert httpx.get(server.url + "/health", timeout=10).status_code == 200  # stuck is not dead
    finally:
        monkeypatch.setattr(engine, "_step", real_step)
        release.set()
    _wait(lambda: engine.idle)
    reply = httpx.post(server.url + "/v1/chat/completions", json={**LONG, "max_tokens": 2}, timeout=60)
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 2


class HeldTemplate:
    """The real tokenizer, whose chat template waits for the test to let it go."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.entered, self.release = threading.Event(), threading.Event()

    def apply_chat_template(self, *args, **kwargs):
        self.entered.set()
        self.release.wait(30)
        return self._tokenizer.apply_chat_template(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)


def test_health_answers_while_a_prompt_is_being_prepared(inprocess_server):
    server = inprocess_server()
    prompts = server.app.state.prompts
    held = HeldTemplate(prompts.tokenizer)
    prompts.tokenizer = held
    chat = Post(server.url, {**LONG, "max_tokens": 2})
    try:
        chat.start()
        assert held.entered.wait(30)
        # the chat request is inside its chat template; the event loop is not
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200
        assert httpx.get(server.url + "/ready", timeout=5).status_code == 200
        assert chat.is_alive() and chat.response is None
    finally:
        held.release.set()
    chat.join(60)
    assert chat.response.status_code == 200
