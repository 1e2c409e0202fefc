"""The chart's engine key guard (files/engine_key_guard.py), added to a FastAPI app the way vLLM adds a
``--middleware`` class (``app.add_middleware(cls)``), served by uvicorn on 127.0.0.1. The real vLLM with the
guard is in tests/vllm/test_vllm_e2e.py."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from types import ModuleType

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from infra.chart_values import CHART_DIR
from tests.support.server_process import free_port

KEY = "engine-" + "7e57" * 10


def load_guard() -> ModuleType:
    spec = importlib.util.spec_from_file_location("engine_key_guard", CHART_DIR / "files" / "engine_key_guard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vllm_like_app() -> FastAPI:
    """Paths of vLLM 0.32's OpenAI server, guarded and not by its own --api-key (GUARDED_PREFIX: /v1, ...)."""
    app = FastAPI()
    for path in ("/health", "/metrics", "/invocations", "/tokenize", "/v1/chat/completions", "/ping"):
        app.add_api_route(path, lambda: {"ok": True}, methods=["GET", "POST"])
    return app


@pytest.fixture(scope="module")
def guarded(request: pytest.FixtureRequest) -> Iterator[str]:
    patch = pytest.MonkeyPatch()
    patch.setenv("VLLM_API_KEY", KEY)
    app = vllm_like_app()
    app.add_middleware(load_guard().EngineKeyGuard)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the guarded app did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    patch.undo()


@pytest.mark.parametrize("path", ["/invocations", "/tokenize", "/v1/chat/completions", "/ping", "/nowhere"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x", KEY])
def test_everything_but_health_and_metrics_needs_the_key(guarded: str, path: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = httpx.post(guarded + path, json={"messages": []}, headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text


@pytest.mark.parametrize("path", ["/invocations", "/v1/chat/completions", "/tokenize"])
def test_the_key_opens_every_path(guarded: str, path: str) -> None:
    assert httpx.post(guarded + path, json={}, headers={"Authorization": f"bearer {KEY}"}).json() == {"ok": True}


@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_probes_and_scraping_need_no_key(guarded: str, path: str) -> None:
    assert httpx.get(guarded + path).status_code == 200


def test_without_a_key_the_engine_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="VLLM_API_KEY is empty"):
        load_guard().EngineKeyGuard(vllm_like_app())
