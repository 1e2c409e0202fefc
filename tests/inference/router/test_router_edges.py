"""Auth, per-key limits, tenant-isolated cache, audit lines, bad input, bind refusal, no torch/pulumi."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.error
import urllib.request

import openai
import pytest

from inference.router.config import RouterConfigError

from .harness import router_config, run_router

MSG = [{"role": "user", "content": "the secret plan"}]


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_auth_hashes_keys_and_answers_401_in_openai_shape(ups, tmp_path):
    cfg = router_config(
        [ups["a"].url],
        None,
        tmp_path / "a.jsonl",
        auth={"keys_sha256": [sha("plain-key")], "keys": [{"id": "team-x", "sha256": sha("team-key")}]},
    )
    with run_router(cfg) as r:
        for key in ("wrong-key", ""):
            c = openai.OpenAI(base_url=r.v1, api_key=key or "x", max_retries=0)
            if not key:
                status, headers, body = post(r.v1 + "/chat/completions", json.dumps({"messages": MSG}).encode())
                assert status == 401 and body["error"]["code"] == "missing_api_key"
                assert set(body["error"]) == {"message", "type", "param", "code"}
                assert headers["x-dsdeploy-route"] == "local" and headers["x-dsdeploy-request-id"]
                continue
            with pytest.raises(openai.AuthenticationError) as info:
                c.chat.completions.create(model="fake-model", messages=MSG)
            assert info.value.body["type"] == "authentication_error"
        for key in ("plain-key", "team-key"):
            c = openai.OpenAI(base_url=r.v1, api_key=key, max_retries=0)
            assert c.chat.completions.create(model="fake-model", messages=MSG).choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=r.v1, api_key="nope", max_retries=0).models.list()
        lines = r.audit_lines(at_least=3)
    assert [line["key_id"] for line in lines if line["status"] == 200] == ["sha256:" + sha("plain-key")[:12], "team-x"]
    assert [line["status"] for line in lines].count(401) == 2
    text = (tmp_path / "a.jsonl").read_text()
    for secret in ("plain-key", "team-key", "wrong-key", "the secret plan"):
        assert secret not in text
    assert all(k not in json.dumps(ups["a"].requests()) for k in ("plain-key", "team-key"))


def test_refuses_non_loopback_bind_without_auth(tmp_path):
    cfg = router_config(["http://127.0.0.1:9"], None, tmp_path / "a.jsonl")
    with pytest.raises(RouterConfigError, match="refusing to listen on '0.0.0.0' without auth"):
        cfg.check_bind("0.0.0.0")
    cfg.check_bind("127.0.0.1")
    cfg.check_bind("::1")
    cfg.check_bind("0.0.0.0", allow_insecure=True)
    router_config(["http://127.0.0.1:9"], None, tmp_path / "a.jsonl", auth={"keys_sha256": [sha("k")]}).check_bind(
        "0.0.0.0"
    )
    config_file = tmp_path / "router.yaml"
    config_file.write_text("upstreams: [{url: 'http://127.0.0.1:9'}]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "inference.router", "--config", str(config_file), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "without auth" in proc.stderr


def test_per_key_rpm_limit_answers_429_with_retry_after(ups, tmp_path):
    cfg = router_config(
        [ups["a"].url],
        None,
        tmp_path / "a.jsonl",
        auth={"keys": [{"id": "slow", "sha256": sha("k1"), "rpm": 2}, {"id": "free", "sha256": sha("k2")}]},
    )
    with run_router(cfg) as r:
        limited = openai.OpenAI(base_url=r.v1, api_key="k1", max_retries=0)
        for _ in range(2):
            limited.chat.completions.create(model="fake-model", messages=MSG)
        with pytest.raises(openai.RateLimitError) as info:
            limited.chat.completions.create(model="fake-model", messages=MSG)
        assert int(info.value.response.headers["retry-after"]) >= 1
        assert info.value.body["code"] == "rate_limit_exceeded"
        free = openai.OpenAI(base_url=r.v1, api_key="k2", max_retries=0)
        for _ in range(3):
            free.chat.completions.create(model="fake-model", messages=MSG)
    assert len(ups["a"].requests()) == 5


def test_cache_is_per_tenant_and_only_for_deterministic_requests(ups, tmp_path):
    keys = [
        {"id": "k1", "sha256": sha("k1"), "tenant": "t1"},
        {"id": "k1b", "sha256": sha("k1b"), "tenant": "t1"},
        {"id": "k2", "sha256": sha("k2"), "tenant": "t2"},
    ]
    cfg = router_config([ups["a"].url], None, tmp_path / "a.jsonl", auth={"keys": keys}, cache={"enabled": True})
    with run_router(cfg) as r:

        def ask(key: str, temperature: float):
            c = openai.OpenAI(base_url=r.v1, api_key=key, max_retries=0)
            raw = c.chat.completions.with_raw_response.create(model="fake-model", messages=MSG, temperature=temperature)
            return raw.headers.get("x-dsdeploy-cache"), raw.parse().id

        first = ask("k1", 0)
        assert first[0] is None
        assert ask("k1", 0) == ("hit", first[1])
        assert ask("k1b", 0) == ("hit", first[1])  # same tenant
        other = ask("k2", 0)
        assert other[0] is None and other[1] != first[1]  # another tenant never sees t1's answer
        assert ask("k1", 0.7)[0] is None
        assert ask("k1", 0.7)[0] is None
    assert len(ups["a"].requests()) == 4


@pytest.mark.parametrize("mode", ["off", "hash", "full"])
def test_audit_lines_are_complete_and_prompts_follow_config(ups, tmp_path, mode):
    ups["a"].control(mode="status", status=500)
    cfg = router_config(
        [ups["a"].url, ups["b"].url],
        ups["cloud"].url,
        tmp_path / "a.jsonl",
        audit={"prompts": mode},
        auth={"keys": [{"id": "ops", "sha256": sha("ops-key")}]},
    )
    with run_router(cfg) as r:
        c = openai.OpenAI(base_url=r.v1, api_key="ops-key", max_retries=0, default_headers={"X-Data-Class": "public"})
        c.chat.completions.create(model="fake-model", messages=MSG)
        (line,) = r.audit_lines()
    expected = {
        "request_id",
        "time",
        "key_id",
        "tenant",
        "data_class",
        "method",
        "path",
        "model",
        "stream",
        "route",
        "upstream",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "fallback_reason",
        "attempts",
        "failures",
        "cache",
        "error",
    }
    assert expected <= set(line)
    assert line["key_id"] == "ops" and line["data_class"] == "public" and line["status"] == 200
    assert line["route"] == "local" and line["upstream"] == f"127.0.0.1:{ups['b'].port}"
    assert line["prompt_tokens"] == 7 and line["completion_tokens"] == 3 and line["latency_ms"] > 0
    assert line["failures"] in ([], [f"127.0.0.1:{ups['a'].port}:upstream_5xx"])  # a tried first or not
    text = (tmp_path / "a.jsonl").read_text()
    assert "ops-key" not in text
    assert ("the secret plan" in text) == (mode == "full")
    assert ("prompt_sha256" in line) == (mode == "hash")


def test_bad_input_gets_400_without_reaching_upstream(ups, tmp_path):
    cfg = router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl", limits={"max_body_bytes": 4096})
    url = None
    with run_router(cfg) as r:
        url = r.v1 + "/chat/completions"
        cases = [
            (b"{not json", "invalid_json", None),
            (b"[1, 2]", "invalid_json", None),
            (json.dumps({"model": "m"}).encode(), "invalid_value", "messages"),
            (json.dumps({"messages": []}).encode(), "invalid_value", "messages"),
            (json.dumps({"messages": MSG, "max_tokens": "many"}).encode(), "invalid_value", "max_tokens"),
            (json.dumps({"messages": MSG, "stream": "yes"}).encode(), "invalid_value", "stream"),
            (json.dumps({"messages": [{"content": "no role"}]}).encode(), "invalid_value", "messages.0.role"),
            (json.dumps({"messages": MSG, "pad": "x" * 5000}).encode(), "body_too_large", None),
        ]
        for body, code, param in cases:
            status, _, err = post(url, body)
            assert status == 400, body
            assert err["error"]["code"] == code and err["error"]["param"] == param
            assert err["error"]["type"] == "invalid_request_error"
        status, _, err = post(url, json.dumps({"messages": MSG}).encode(), {"X-Data-Class": "secret"})
        assert (
            status == 400
            and err["error"]["param"] == "X-Data-Class"
            and "public, internal, restricted" in err["error"]["message"]
        )
        status, _, err = post(r.v1 + "/completions", json.dumps({"prompt": 5}).encode())
        assert status == 400 and err["error"]["param"] == "prompt"
        status, _, err = post(r.url + "/v1/nothing", b"{}")
        assert status == 404 and err["error"]["type"] == "not_found_error"
    assert ups["a"].requests() == [] and ups["cloud"].requests() == []


def test_router_imports_neither_torch_nor_pulumi():
    code = (
        "import sys\n"
        "from inference.router.config import parse_router_config\n"
        "from inference.router.app import RouterApp\n"
        "import inference.router.command, inference.client\n"
        "RouterApp(parse_router_config({'upstreams': [{'url': 'http://127.0.0.1:9'}]}))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'pulumi', 'transformers')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_router_image_is_small_non_root_and_router_only():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "inference" / "Dockerfile.router").read_text()
    # Wheels of the package and its router extra only, installed from the build stage (no index); the built
    # image is checked for torch and pulumi in tests/images/test_image_build.py.
    assert "python:3.11-slim" in text and '".[router]"' in text and "--no-index /wheels/*.whl" in text
    assert "USER 10001" in text and "--no-cache-dir" in text
    assert "COPY infra" not in text  # no Pulumi code in the router image
    assert 'ENTRYPOINT ["dsdeploy", "route"]' in text
