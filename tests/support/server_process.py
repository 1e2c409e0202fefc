"""Start a server as a subprocess on a free 127.0.0.1 port, wait until it is ready, stop it.

Generic: any command that serves HTTP on the port it is given. Used for the model server, the router
and end-to-end tests::

    with ServerProcess([sys.executable, "-m", "inference.server", "--model", folder],
                       port_arg="--port") as server:
        httpx.get(server.url + "/v1/models")

The child's stdout and stderr go to a log file whose tail is shown when it fails to start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerStartError(RuntimeError):
    pass


class ServerProcess:
    """A server subprocess; use as a context manager or call ``start()`` / ``stop()``.

    ``command`` is the argv without the port; ``port_arg`` (e.g. ``--port``) and the chosen port are
    appended, and ``--host 127.0.0.1`` too when ``host_arg`` is set. ``ready_path`` is polled until it
    answers 200 (``None``: wait only for the port to accept connections).
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        port_arg: str | None = "--port",
        host_arg: str | None = "--host",
        port: int | None = None,
        ready_path: str | None = "/ready",
        env: dict[str, str] | None = None,
        start_timeout: float = 120.0,
        cwd: Path | str | None = None,
        own_group: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.url = f"http://{self.host}:{self.port}"
        argv = list(command)
        if host_arg:
            argv += [host_arg, self.host]
        if port_arg:
            argv += [port_arg, str(self.port)]
        self.argv = argv
        self.ready_path = ready_path
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.cwd = str(cwd or REPO_ROOT)
        self.own_group = own_group  # its own process group (a server with worker processes, like vLLM)
        self.process: subprocess.Popen | None = None
        self._log_file = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log_file.name)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def launch(self) -> ServerProcess:
        """Start the process without waiting for it to be ready (then call ``wait_ready``)."""
        self.process = subprocess.Popen(
            self.argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=self.own_group,
        )
        return self

    def start(self) -> ServerProcess:
        """Start the process and wait until it is ready."""
        self.launch().wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerStartError(f"{self.argv[:4]} exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._answers():
                return
            time.sleep(0.2)
        self.stop()
        raise ServerStartError(f"{self.argv[:4]} not ready after {self.start_timeout:.0f} s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        if self.ready_path is None:
            with socket.socket() as sock:
                sock.settimeout(0.5)
                return sock.connect_ex((self.host, self.port)) == 0
        try:
            return httpx.get(self.url + self.ready_path, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        """Signal the server and every process it started (``own_group`` servers only): SIGKILL is a pod
        dying, SIGSTOP a frozen node."""
        assert self.own_group and self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            if self.own_group:
                self.signal_group(signal.SIGCONT)  # a frozen group cannot act on SIGTERM
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.own_group:
            self.signal_group(signal.SIGKILL)  # workers it left behind
        self._log_file.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
