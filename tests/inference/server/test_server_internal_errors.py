"""A server fault (a bug, not bad input) is a 500 in the OpenAI shape with its traceback logged once, and
inside a started stream an error event followed by [DONE]. In-process, so that a test can plant the fault."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from inference.server.api.routes import chat

pytestmark = pytest.mark.slow

MODEL_NAME = "smollm2"  # --served-model-name of the fixtures in conftest.py
HI = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}


class Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.fixture
def started(inprocess_server):
    """A server, and then (uvicorn sets up its loggers when it starts) a handler on every logger that could
    log its tracebacks."""
    server = inprocess_server()
    handler = Tracebacks()
    loggers = [logging.getLogger(name) for name in ("", "inference", "uvicorn", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    yield server, handler
    for logger in loggers:
        logger.removeHandler(handler)


def test_a_fault_is_a_500_logged_once(started, monkeypatch):
    server, tracebacks = started

    async def broken(_messages):
        raise RuntimeError("planted fault")

    monkeypatch.setattr(server.app.state.prompts, "chat", broken)
    response = httpx.post(server.url + "/v1/chat/completions", json=HI, timeout=30)
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "internal error (RuntimeError)",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert "planted fault" not in response.text
    assert len({id(r) for r in tracebacks.records}) == 1, [r.getMessage() for r in tracebacks.records]


def test_a_fault_inside_a_stream_ends_it_with_an_error_event(started, monkeypatch):
    server, tracebacks = started

    async def broken_events(*_args, **_kwargs):
        raise RuntimeError("planted fault")
        yield  # an async generator

    monkeypatch.setattr(chat, "watched_events", broken_events)
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**HI, "stream": True}, timeout=30) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert (error["code"], error["type"]) == ("internal_error", "server_error")
    assert len({id(r) for r in tracebacks.records}) == 1
