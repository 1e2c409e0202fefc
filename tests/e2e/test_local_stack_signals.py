"""`dsdeploy local up` stops however its terminal or its starter goes away, and leaves nothing behind.

In a real terminal (tmux, on a private server socket): Ctrl-C while a request streams (the terminal says a
request is in flight and it gets its grace), and closing the terminal (`tmux kill-session`: SIGHUP). Then
without a terminal: `local up` killed with SIGKILL (its children get the parent-death SIGTERM), and the
process that started it killed with SIGKILL (as `make` would be; `local up` gets the parent-death SIGHUP).
Every case: the model server and the router are gone and both ports are free. Ephemeral ports throughout.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from dsdeploy.local_stack import DRAIN_GRACE_S, EXIT_MARGIN_S, free_port, port_free
from tests.e2e.terminal_signals import terminal_defaults

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 300
BANNER_END = "Press Ctrl-C to stop both services"
GONE_S = DRAIN_GRACE_S + EXIT_MARGIN_S + 10  # the stop's own bound, and time to notice it


class Stack:
    """Ports and work folder of one `local up`, and the command that starts it."""

    def __init__(self, tmp: Path) -> None:
        self.router_port, self.server_port = free_port(), free_port()
        self.work = tmp / "stack"
        self.url = f"http://127.0.0.1:{self.router_port}"
        self.argv = [
            sys.executable,
            "-m",
            "dsdeploy",
            "local",
            "up",
            "--router-port",
            str(self.router_port),
            "--server-port",
            str(self.server_port),
            "--work-dir",
            str(self.work),
        ]

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def services(self) -> list[psutil.Process]:
        """The model server and router processes of this stack (found by their ports in argv)."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if ("inference.server" in cmdline and str(self.server_port) in cmdline) or (
                "inference.router" in cmdline and str(self.work) in cmdline
            ):
                found.append(proc)
        return found

    def assert_all_gone(self, *extra: psutil.Process) -> None:
        procs = [*self.services(), *extra]
        _, alive = psutil.wait_procs(procs, timeout=GONE_S)
        alive = [p for p in alive if _running(p)]
        assert not alive, f"still running after {GONE_S:.0f} s: {[' '.join(p.cmdline()) for p in alive]}"
        assert port_free("127.0.0.1", self.router_port) and port_free("127.0.0.1", self.server_port)


def _running(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return proc.status() != psutil.STATUS_ZOMBIE
    return False


class Terminal:
    """A tmux session on a private server: a real terminal whose keys and hang-up reach `local up`."""

    def __init__(self, tmp: Path) -> None:
        if not shutil.which("tmux"):
            pytest.fail("tmux is needed for the terminal tests (apt-get install tmux)")
        self.socket = f"dsdeploy-test-{uuid.uuid4().hex[:8]}"
        self.session = "stack"
        self.log = tmp / "terminal.log"

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30, check=False
        )

    def start(self, command: list[str]) -> None:
        env = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        shell = f"cd {shlex.quote(str(REPO))} && env " + " ".join(f"{k}={v}" for k, v in env.items())
        proc = self.tmux("new-session", "-d", "-s", self.session, "-x", "200", "-y", "50", "bash --norc --noprofile")
        assert proc.returncode == 0, proc.stderr
        self.tmux("pipe-pane", "-o", "-t", self.session, f"cat >> {shlex.quote(str(self.log))}")
        self.tmux("send-keys", "-t", self.session, f"{shell} {shlex.join(command)}", "Enter")

    def text(self) -> str:
        """What the terminal showed, without its colour and cursor escapes."""
        raw = self.log.read_text(errors="replace") if self.log.exists() else ""
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)

    def shell_pid(self) -> int:
        return int(self.tmux("display-message", "-p", "-t", self.session, "#{pane_pid}").stdout.strip())

    def close(self) -> None:
        self.tmux("kill-server")


def _wait(predicate, what: str, timeout: float, log=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached after {timeout:.0f} s:\n{log()[-3000:]}")
        time.sleep(0.3)


def _local_up_of(parent: psutil.Process) -> psutil.Process:
    for child in parent.children(recursive=True):
        cmdline = child.cmdline()
        if "dsdeploy" in cmdline and "local" in cmdline and "up" in cmdline:
            return child
    raise AssertionError("no `dsdeploy local up` under " + " ".join(parent.cmdline()))


@pytest.fixture
def terminal(tmp_path):
    term = Terminal(tmp_path)
    try:
        yield term
    finally:
        term.close()


def _start_in_terminal(terminal: Terminal, stack: Stack) -> psutil.Process:
    terminal.start(stack.argv)
    _wait(lambda: stack.ready() and BANNER_END in terminal.text(), "the banner", STARTUP_S, terminal.text)
    return _local_up_of(psutil.Process(terminal.shell_pid()))


def test_ctrl_c_gives_a_request_in_flight_its_grace_and_says_so(terminal, tmp_path):
    stack = Stack(tmp_path)
    local_up = _start_in_terminal(terminal, stack)
    events: list[str] = []
    first = threading.Event()

    def stream() -> None:
        body = {
            "model": "smollm2-135m-instruct",
            "stream": True,
            "max_tokens": 400,
            "temperature": 0,
            "ignore_eos": True,
            "messages": [{"role": "user", "content": "Count to a thousand."}],
        }
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream("POST", stack.url + "/v1/chat/completions", json=body, timeout=60) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) >= 3:
                        first.set()

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    assert first.wait(120), "the stream did not start"
    terminal.tmux("send-keys", "-t", terminal.session, "C-c")
    _wait(
        lambda: "request(s) in flight get up to 5 s to finish" in terminal.text(),
        "the in-flight notice",
        30,
        terminal.text,
    )
    reader.join(GONE_S)
    assert not reader.is_alive()
    # the stream was answered, not cut: it ends with [DONE] (its last event says why if the grace ran out)
    assert events and events[-1] == "[DONE]", events[-3:]
    stack.assert_all_gone(local_up)


def test_closing_the_terminal_stops_the_stack(terminal, tmp_path):
    stack = Stack(tmp_path)
    local_up = _start_in_terminal(terminal, stack)
    services = stack.services()
    assert len(services) == 2
    terminal.tmux("kill-session", "-t", terminal.session)  # the terminal goes away: SIGHUP
    stack.assert_all_gone(local_up, *services)


def test_no_child_outlives_local_up_killed_with_sigkill(tmp_path):
    stack = Stack(tmp_path)
    log = (tmp_path / "local-up.log").open("w")
    process = subprocess.Popen(
        stack.argv,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=terminal_defaults,
    )
    try:
        _wait(stack.ready, "the router", STARTUP_S, lambda: (tmp_path / "local-up.log").read_text())
        services = stack.services()
        assert len(services) == 2
        process.kill()  # SIGKILL: no handler runs; the kernel sends the children their parent-death SIGTERM
        process.wait()
        stack.assert_all_gone(*services)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        for proc in stack.services():
            proc.kill()


def test_local_up_stops_when_its_starter_is_killed(tmp_path):
    # As `make run` killed with -9: the shell in between does not exec (a command follows), so `local up`
    # learns of it only from its parent-death SIGHUP.
    stack = Stack(tmp_path)
    starter = subprocess.Popen(
        ["sh", "-c", f"{shlex.join(stack.argv)}; echo finished"],
        cwd=REPO,
        stdout=(tmp_path / "starter.log").open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=terminal_defaults,
    )
    local_up = None
    try:
        _wait(stack.ready, "the router", STARTUP_S, lambda: (tmp_path / "starter.log").read_text())
        local_up = _local_up_of(psutil.Process(starter.pid))
        services = stack.services()
        starter.kill()
        starter.wait()
        stack.assert_all_gone(local_up, *services)
    finally:
        for proc in [*stack.services(), *([local_up] if local_up else [])]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
