"""End to end: what `make run` runs (`dsdeploy local up`), on free ports, with the real SmolLM2 model.

The real `openai` client talks to the router; the router talks to the real model server; a loopback
stand-in plays the DeepSeek API. Stopping the model server sends `public` requests to the stand-in and
gives `restricted` ones the policy's 503; Ctrl-C leaves no process and no port behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from dsdeploy.local_stack import free_port, port_free
from tests.e2e.cloud_standin import ANSWER, RunningStandIn
from tests.e2e.terminal_signals import terminal_defaults

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 300
BANNER_END = "Press Ctrl-C to stop both services"


def _dsdeploy(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dsdeploy", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )


def _wait_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    """Ready as a user sees it: the router answers /ready *and* the banner telling how to call it is out.

    The router turns ready a moment before `local up` prints its banner, so polling /ready alone races
    the banner (a CI run read the log in between)."""
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dsdeploy local up exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200 and BANNER_END in log.read_text():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"local stack not ready after {STARTUP_S} s:\n{log.read_text()[-3000:]}")


def _service_pids(process: subprocess.Popen) -> dict[str, int]:
    found = {}
    for child in psutil.Process(process.pid).children(recursive=True):
        cmdline = " ".join(child.cmdline())
        for name in ("inference.server", "inference.router"):
            if name in cmdline:
                found[name] = child.pid
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("local-stack")
    router_port, server_port, cloud_port = free_port(), free_port(), free_port()
    env = {**os.environ, "DEEPSEEK_API_KEY": "test-key-for-the-stand-in", "PYTHONUNBUFFERED": "1"}
    log = work / "local-up.log"
    with RunningStandIn(cloud_port) as standin, log.open("w") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dsdeploy",
                "local",
                "up",
                "--router-port",
                str(router_port),
                "--server-port",
                str(server_port),
                "--cloud-base-url",
                f"http://127.0.0.1:{cloud_port}",
                "--work-dir",
                str(work / "stack"),
            ],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=terminal_defaults,
        )
        url = f"http://127.0.0.1:{router_port}"
        try:
            _wait_ready(process, url, log)
            yield {
                "process": process,
                "url": url,
                "standin": standin,
                "log": log,
                "env": env,
                "ports": (router_port, server_port),
                "pids": _service_pids(process),
            }
        finally:
            _stop_tree(process)


def _stop_tree(process: subprocess.Popen) -> None:
    """Ctrl-C the stack as a user would; if it does not stop, kill it and every child it left."""
    if process.poll() is not None:
        return
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def test_startup_output_tells_how_to_call_it(stack):
    text = stack["log"].read_text()
    assert f"{stack['url']}/v1/chat/completions" in text  # the curl line
    assert 'OpenAI(base_url="' in text
    assert "cloud fallback: ON for data class 'public'" in text


def test_openai_client_chat_and_stream_from_the_real_model(stack):
    client = openai.OpenAI(base_url=f"{stack['url']}/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct",
        max_tokens=12,
        temperature=0,
        messages=[{"role": "user", "content": "Name a colour."}],
    )
    reply = raw.parse()
    assert raw.headers["x-dsdeploy-route"] == "local"
    assert reply.choices[0].message.content.strip()
    assert ANSWER not in reply.choices[0].message.content
    assert 0 < reply.usage.completion_tokens <= 12

    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        max_tokens=12,
        stream=True,
        messages=[{"role": "user", "content": "Count to three."}],
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) >= 2 and "".join(pieces).strip()
    assert not stack["standin"].requests  # all of that was served locally


def test_smoke_passes_against_the_stack_and_fails_against_a_dead_url(stack):
    good = _dsdeploy("smoke", "--url", stack["url"], "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    assert '"ok": true' in good.stdout
    dead = _dsdeploy("smoke", "--url", f"http://127.0.0.1:{free_port()}")
    assert dead.returncode == 1
    assert "Connection refused" in dead.stdout or "ConnectError" in dead.stdout


@contextlib.contextmanager
def _explained(stack: dict):
    """A failure here says what the stack logged: local up, the router, the audit lines (a CI run's only clue)."""
    try:
        yield
    except (AssertionError, openai.APIError, psutil.Error, subprocess.TimeoutExpired) as exc:
        work = stack["log"].parent / "stack"
        parts = [f"{exc!r}"]
        for path in (stack["log"], work / "router.log", work / "server.log", work / "audit.jsonl"):
            text = path.read_text(errors="replace") if path.exists() else "(none)"
            parts.append(f"--- {path.name}:\n{text[-3000:]}")
        raise AssertionError("\n".join(parts)) from exc


def test_server_down_public_goes_to_cloud_restricted_gets_503_then_clean_shutdown(stack):
    with _explained(stack):
        _server_down_then_clean_shutdown(stack)


def _server_down_then_clean_shutdown(stack: dict) -> None:
    process, standin = stack["process"], stack["standin"]
    server_pid = stack["pids"]["inference.server"]
    os.kill(server_pid, signal.SIGKILL)
    psutil.Process(server_pid).wait(timeout=10) if psutil.pid_exists(server_pid) else None
    client = openai.OpenAI(base_url=f"{stack['url']}/v1", api_key="unused", max_retries=0)

    before = len(standin.requests)
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct",
        max_tokens=12,
        extra_headers={"X-Data-Class": "public"},
        messages=[{"role": "user", "content": "public question"}],
    )
    assert raw.headers["x-dsdeploy-route"] == "cloud"
    assert raw.parse().choices[0].message.content == ANSWER
    assert len(standin.requests) == before + 1
    assert standin.requests[-1].headers["authorization"] == "Bearer test-key-for-the-stand-in"

    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(
            model="smollm2-135m-instruct",
            max_tokens=12,
            extra_headers={"X-Data-Class": "restricted"},
            messages=[{"role": "user", "content": "restricted secret question"}],
        )
    assert refused.value.status_code == 503
    assert "restricted" in str(refused.value)
    assert len(standin.requests) == before + 1  # nothing more reached the cloud
    assert all("restricted secret" not in str(r.body) for r in standin.requests)

    # Ctrl-C: both services stop, nothing is left behind.
    pids = list(stack["pids"].values())
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    router_port, server_port = stack["ports"]
    assert port_free("127.0.0.1", router_port) and port_free("127.0.0.1", server_port)
