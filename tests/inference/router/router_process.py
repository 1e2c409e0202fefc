"""The router as its own process (``python -m inference.router``), as each replica of a Deployment runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .harness import free_port


class RouterProcess:
    def __init__(self, config: dict[str, Any], workdir: Path, name: str, environ: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.audit_path = workdir / f"{name}-audit.jsonl"
        config = {**config, "audit": {"path": str(self.audit_path), "flush_interval_s": 0.1}}
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.environ = {**os.environ, **environ}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path = self.config_path.with_suffix(".log")
        with self.log_path.open("ab") as log:  # a file, not a pipe: a full pipe would block the router
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "inference.router", "--config", str(self.config_path), "--port", str(self.port)],
                env=self.environ,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    err = self.log_path.read_text()
                    raise RuntimeError(f"router exited with {self.proc.returncode}: {err}") from None
                time.sleep(0.05)
        raise RuntimeError("router process did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def post(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(
            self.url + "/v1/chat/completions",
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            return resp.read().decode()

    def audit_lines(self, at_least: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while True:
            text = self.audit_path.read_text() if self.audit_path.exists() else ""
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
            if len(lines) >= at_least or time.monotonic() > deadline:
                return lines
            time.sleep(0.1)
