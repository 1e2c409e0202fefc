"""`dsdeploy smoke`, `dsdeploy chat` and the failure paths of `dsdeploy local up`, without a model.

The endpoint under test is the loopback DeepSeek stand-in: any OpenAI-compatible server will do.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dsdeploy.cli import main
from dsdeploy.local_stack import LocalStackOptions, free_port, router_config
from inference.engines import READY_PATHS
from tests.e2e.cloud_standin import ANSWER, RunningStandIn

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def standin():
    with RunningStandIn(free_port()) as running:
        yield running


def test_smoke_passes_and_reports_each_check(standin, capsys):
    assert main(["smoke", "--url", f"http://127.0.0.1:{standin.port}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == ["models", "chat", "stream"]
    assert all(c["status"] == 200 and c["ok"] for c in report["checks"])
    assert "chunks" in report["checks"][2]["detail"]


def test_smoke_sends_key_and_data_class(standin):
    assert (
        main(["smoke", "--url", f"http://127.0.0.1:{standin.port}/v1", "--api-key", "k-123", "--data-class", "public"])
        == 0
    )
    last = standin.requests[-1]
    assert last.headers["authorization"] == "Bearer k-123"
    assert last.headers["x-data-class"] == "public"
    assert last.body["stream"] is True and last.body["stream_options"] == {"include_usage": True}


def test_smoke_fails_with_nonzero_exit_on_dead_url(capsys):
    assert main(["smoke", "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "smoke test failed" in out


def test_smoke_rejects_a_url_without_scheme(capsys):
    assert main(["smoke", "--url", "127.0.0.1:8080"]) == 2
    assert "must start with http://" in capsys.readouterr().err


def test_chat_streams_the_answer_and_names_the_route(standin, capsys):
    assert main(["chat", "hello there", "--url", f"http://127.0.0.1:{standin.port}", "--max-tokens", "8"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == ANSWER
    assert "route direct" in captured.err and "6 tokens" in captured.err
    assert standin.requests[-1].body["messages"] == [{"role": "user", "content": "hello there"}]


def test_chat_reports_unreachable_endpoint(capsys):
    assert main(["chat", "hi", "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "error:" in capsys.readouterr().err


def test_bad_data_class_is_an_argument_error():
    with pytest.raises(SystemExit) as exc:
        main(["chat", "hi", "--data-class", "secret"])
    assert exc.value.code == 2


def _local_up(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dsdeploy", "local", "up", *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_local_up_refuses_a_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _local_up("--router-port", str(port), "--server-port", str(free_port()))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 (router) is in use" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_local_up_reports_a_missing_model(tmp_path):
    missing = tmp_path / "nope.gguf"
    result = _local_up("--model", str(missing), "--router-port", str(free_port()), "--server-port", str(free_port()))
    assert result.returncode == 1
    assert f"model {str(missing)!r} does not exist" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_local_up_rejects_an_invalid_port():
    result = _local_up("--router-port", "70000")
    assert result.returncode == 2
    assert "router_port" in result.stderr and "70000" in result.stderr


def test_router_config_enables_cloud_only_with_a_key(monkeypatch):
    from inference.router.config import parse_router_config

    options = LocalStackOptions(server_port=9001)
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    monkeypatch.setenv("DSDEPLOY_ENGINE_KEY", "engine-key")  # what LocalStack gives the router
    local_only = router_config(options, Path("/tmp/audit.jsonl"))
    assert "cloud" not in local_only
    upstream = parse_router_config(local_only).upstreams[0]
    assert upstream.url == "http://127.0.0.1:9001" and upstream.api_key == "engine-key"
    for engine, path in READY_PATHS.items():  # the router probes the path a draining engine fails
        assert (
            parse_router_config(
                router_config(LocalStackOptions(engine=engine, vllm_python=Path(sys.executable)), Path("/a"))
            ).health.path
            == path
        )

    monkeypatch.setenv("DEEPSEEK_API_KEY", "from-env")
    hybrid = router_config(options, Path("/tmp/audit.jsonl"))
    assert hybrid["cloud"]["api_key"] == "${DEEPSEEK_API_KEY}"  # a reference, never the key itself
    parsed = parse_router_config(hybrid)
    assert parsed.policy.cloud_allowed == ["public"] and parsed.cloud.api_key == "from-env"


def test_local_stack_routes_by_the_routers_own_defaults(monkeypatch):
    """The local stack writes only what differs on one machine; the fallback policy, the cloud's URL and model
    map are inference/router/config.py's defaults (which the chart's values.yaml repeats, under test)."""
    from inference.router.config import CloudConfig, PolicyConfig, parse_router_config

    monkeypatch.setenv("DEEPSEEK_API_KEY", "from-env")
    monkeypatch.setenv("DSDEPLOY_ENGINE_KEY", "engine-key")  # the engine's key, when the config names it
    written = router_config(LocalStackOptions(), Path("/tmp/audit.jsonl"))
    assert "policy" not in written and "auth" not in written and set(written["cloud"]) == {"base_url", "api_key"}
    parsed = parse_router_config(written)
    defaults = CloudConfig(api_key="x")
    assert parsed.policy == PolicyConfig()
    assert (parsed.cloud.base_url, parsed.cloud.models) == (defaults.base_url, defaults.models)
    assert LocalStackOptions().cloud_base_url == defaults.base_url


def test_the_local_engine_gets_its_key_in_the_environment_not_on_its_command_line(tmp_path):
    """make run: the router holds the engine's key; the server reads it from DSDEPLOY_ENGINE_KEY, vLLM from
    VLLM_API_KEY; neither has it in its argv (the process list)."""
    from dsdeploy.local_stack import LocalStack

    for engine, variable in (("server", "DSDEPLOY_ENGINE_KEY"), ("vllm", "VLLM_API_KEY")):
        stack = LocalStack(LocalStackOptions(engine=engine, vllm_python=tmp_path / "python", work_dir=tmp_path))
        assert stack.engine_env()[variable] == stack.engine_key and len(stack.engine_key) >= 32
        assert stack.engine_key not in " ".join(stack.server_args(tmp_path))


def test_client_rejects_bad_url_and_data_class():
    from inference.client import ChatClient

    with pytest.raises(ValueError, match="must start with http"):
        ChatClient("localhost:8080")
    with pytest.raises(ValueError, match="data class 'secret' is not one of public, internal, restricted"):
        ChatClient("http://127.0.0.1:8080", data_class="secret")


def test_smoke_does_not_retry_a_failing_endpoint(standin):
    from dsdeploy.smoke import run_smoke

    results = run_smoke(f"http://127.0.0.1:{standin.port}", model="m", max_tokens=4)
    assert [r.ok for r in results] == [True, True, True]
    dead = run_smoke(f"http://127.0.0.1:{free_port()}", timeout_s=5)
    assert not dead[0].ok and dead[0].status is None and "ConnectError" in dead[0].detail
