"""Test harness: fake upstream processes (killable, freezable) and an in-thread router on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from inference.router.app import RouterApp
from inference.router.command import uvicorn_config
from inference.router.config import RouterConfig, parse_router_config

FAKE = Path(__file__).with_name("fake_upstream.py")
CLOUD_KEY = "sk-test-cloud-key-0123456789"


def until(check: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    """Wait for ``check`` (a state, not a speed: the limit only keeps a broken run from hanging)."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, payload: Any = None, timeout: float = 5.0) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class FakeProcess:
    """One fake upstream in its own process, so tests can kill it or freeze it with SIGSTOP."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **behaviour: Any) -> None:
        """Start (again, on the same port); ``behaviour`` is in force from the first request on."""
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(FAKE),
                "--port",
                str(self.port),
                "--name",
                self.name,
                "--behaviour",
                json.dumps(behaviour),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                http_json("GET", self.url + "/health", timeout=0.5)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"fake upstream {self.name} exited with {self.proc.returncode}") from None
                time.sleep(0.05)
        raise RuntimeError(f"fake upstream {self.name} did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def drain(self, timeout: float = 30.0) -> None:
        """SIGTERM, as a rollout sends: it stops taking work (503 on /health and new completions), finishes
        what it has open, and exits; wait for that."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_running(self) -> None:
        if self.alive():
            self.thaw()
        else:
            self.start()
        self.reset()

    def control(self, **behaviour: Any) -> None:
        http_json("POST", self.url + "/_control", behaviour)

    def reset(self) -> None:
        http_json("POST", self.url + "/_reset", {})

    def requests(self) -> list[dict[str, Any]]:
        return http_json("GET", self.url + "/_record")["requests"]

    def client_requests(self) -> list[dict[str, Any]]:
        """Chat requests that came from clients (the router's own half-open probes say so in a header)."""
        return [
            r
            for r in self.requests()
            if r["path"].endswith("/chat/completions") and "x-dsdeploy-probe" not in r["headers"]
        ]


class RunningRouter:
    def __init__(self, app: RouterApp, url: str, audit_path: Path, server: uvicorn.Server) -> None:
        self.app = app
        self.server = server
        self.url = url
        self.v1 = url + "/v1"
        self.audit_path = audit_path

    def audit_lines(self, at_least: int = 1) -> list[dict[str, Any]]:
        """The audit file's records, once it holds ``at_least`` of them and has stopped growing."""
        deadline = time.monotonic() + 5
        previous: list[dict[str, Any]] | None = None
        while True:
            text = self.audit_path.read_text() if self.audit_path.exists() else ""
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
            if (len(lines) >= at_least and lines == previous) or time.monotonic() > deadline:
                return lines
            previous = lines
            time.sleep(0.15)

    def open_connections(self) -> int:
        """Client connections the router's server holds open now."""
        return len(self.server.server_state.connections)


def router_config(
    upstreams: list[str | dict[str, Any]],
    cloud: str | None,
    audit_path: Path,
    environ: dict[str, str] | None = None,
    **sections: Any,
) -> RouterConfig:
    """A test config; ``upstreams`` are URLs or whole upstream entries; ``sections`` merge into the rest;
    ``environ`` adds variables that ``${NAME}`` references in them resolve to."""
    data: dict[str, Any] = {"upstreams": [{"url": u} if isinstance(u, str) else u for u in upstreams]}
    if cloud is not None:
        data["cloud"] = {
            "base_url": cloud,
            "api_key": "${TEST_CLOUD_KEY}",
            "models": {"*": "deepseek-chat"},
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.5,
        }
    data["audit"] = {"path": str(audit_path), "flush_interval_s": 0.1}
    data["health"] = {"interval_s": 0.1, "timeout_s": 0.5}
    data["circuit"] = {"open_s": 0.5}
    data["saturation"] = {"poll_interval_s": 0.2}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_router_config(data, environ={"TEST_CLOUD_KEY": CLOUD_KEY, **(environ or {})})


@contextlib.contextmanager
def run_router(config: RouterConfig) -> Iterator[RunningRouter]:
    """Serve a RouterApp with uvicorn in a background thread (its own event loop) on a free port."""
    app = RouterApp(config)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, config, "127.0.0.1", port, loop="asyncio", log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("router did not start")
        time.sleep(0.01)
    audit = Path(config.audit.path)
    try:
        yield RunningRouter(app, f"http://127.0.0.1:{port}", audit, server)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
