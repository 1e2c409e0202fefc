"""The happy paths through the router with the real openai client: local first, headers, streaming."""

from __future__ import annotations

import json
import urllib.request

import openai

from .harness import CLOUD_KEY, router_config, run_router


def client(router, **headers) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=router.v1, api_key="unused", max_retries=0, timeout=20, default_headers=headers or None
    )


def test_chat_goes_local_with_route_and_request_id_headers(ups, tmp_path):
    cfg = router_config([ups["a"].url, ups["b"].url], ups["cloud"].url, tmp_path / "audit.jsonl")
    with run_router(cfg) as router:
        raw = client(router).chat.completions.with_raw_response.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        answer = raw.parse()
        assert raw.headers["x-dsdeploy-route"] == "local"
        assert len(raw.headers["x-dsdeploy-request-id"]) == 32
        assert answer.choices[0].message.content in ("answer from a", "answer from b")
        assert answer.usage.completion_tokens == 3
    assert ups["cloud"].requests() == []


def test_stream_passes_through_as_events(ups, tmp_path):
    ups["a"].control(chunks=5, reasoning=True)
    cfg = router_config([ups["a"].url], ups["cloud"].url, tmp_path / "audit.jsonl")
    with run_router(cfg) as router:
        stream = client(router).chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        parts = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
        assert parts == [f"answer from a part {i} " for i in range(5)]
        line = [rec for rec in router.audit_lines() if rec["stream"]][-1]
        assert line["route"] == "local" and line["status"] == 200 and line["completion_tokens"] == 5
        assert line["error"] is None


def test_reasoning_content_reaches_client_from_both_routes(ups, tmp_path):
    for name in ("a", "cloud"):
        ups[name].control(reasoning=True)
    cfg = router_config([ups["a"].url], ups["cloud"].url, tmp_path / "audit.jsonl")
    with run_router(cfg) as router:
        local = client(router).chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
        assert local.choices[0].message.reasoning_content == "thinking in a"
        ups["a"].control(mode="status", status=503)
        raw = client(router, **{"X-Data-Class": "public"}).chat.completions.with_raw_response.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-dsdeploy-route"] == "cloud"
        assert raw.parse().choices[0].message.reasoning_content == "thinking in cloud"


def test_cloud_receives_mapped_model_and_its_key_only(ups, tmp_path):
    ups["a"].control(mode="status", status=500)
    cfg = router_config(
        [ups["a"].url],
        ups["cloud"].url,
        tmp_path / "audit.jsonl",
        auth={"keys": [{"id": "team", "sha256": __import__("hashlib").sha256(b"client-key").hexdigest()}]},
    )
    with run_router(cfg) as router:
        c = openai.OpenAI(
            base_url=router.v1, api_key="client-key", max_retries=0, default_headers={"X-Data-Class": "public"}
        )
        c.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    (seen,) = ups["cloud"].requests()
    assert seen["body"]["model"] == "deepseek-chat"
    assert seen["headers"]["authorization"] == f"Bearer {CLOUD_KEY}"
    assert "client-key" not in json.dumps(seen)
    assert "x-data-class" not in seen["headers"]


def test_completions_models_health_ready_metrics(ups, tmp_path):
    cfg = router_config([ups["a"].url], None, tmp_path / "audit.jsonl")
    with run_router(cfg) as router:
        c = client(router)
        assert c.completions.create(model="fake-model", prompt="once upon").choices[0].text == "answer from a"
        assert [m.id for m in c.models.list()] == ["fake-model"]
        for path in ("/health", "/ready"):
            with urllib.request.urlopen(router.url + path) as resp:
                assert resp.status == 200 and resp.headers["X-Dsdeploy-Route"] == "local"
        with urllib.request.urlopen(router.url + "/metrics") as resp:
            text = resp.read().decode()
        assert 'dsdeploy_router_requests_total{route="local",status="200"} 1.0' in text
        assert 'dsdeploy_router_upstream_healthy{upstream="127.0.0.1:' in text


def test_dns_discovery_makes_each_address_an_upstream(ups, tmp_path):
    url = f"http://localhost:{ups['a'].port}"
    cfg = router_config(
        [{"url": url, "name": "engine", "discover": True, "discover_interval_s": 0.2}], None, tmp_path / "audit.jsonl"
    )
    with run_router(cfg) as router:
        assert [u.label for u in router.app.pool.upstreams] == ["engine@127.0.0.1"]
        answer = client(router).chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "answer from a"
        assert router.audit_lines()[-1]["upstream"] == "engine@127.0.0.1"
