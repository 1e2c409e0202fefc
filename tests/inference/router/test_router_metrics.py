"""The router's /metrics: what a cache hit counts as, and the page as promtool's linter reads it."""

from __future__ import annotations

import json
import urllib.request

from tests.support.promtool import check_metrics

from .harness import router_config, run_router
from .test_router_hardening import MSG, raw_post


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics") as resp:
        return resp.read().decode()


def test_a_cache_hit_of_a_cloud_answer_is_not_counted_as_cloud(ups, tmp_path):
    ups["a"].control(mode="status", status=500)
    cfg = router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl", cache={"enabled": True})
    body = json.dumps({"model": "fake-model", "messages": MSG, "temperature": 0}).encode()
    with run_router(cfg) as r:
        for _ in range(3):
            status, _, _ = raw_post(r.url, body, [("X-Data-Class", "public")])
            assert status == 200
        text = _metrics(r.url)
    assert 'dsdeploy_router_requests_total{route="cloud",status="200"} 1.0' in text
    assert 'dsdeploy_router_requests_total{route="cache",status="200"} 2.0' in text
    assert 'dsdeploy_router_cache_total{result="hit"} 2.0' in text
    assert len(ups["cloud"].requests()) == 1


def test_router_metrics_pass_promtool_check_metrics(ups, tmp_path):
    # Every family populated: local and cloud answers, a fallback, a local failure, cache hits and misses.
    cfg = router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl", cache={"enabled": True})
    body = json.dumps({"model": "fake-model", "messages": MSG, "temperature": 0}).encode()
    with run_router(cfg) as r:
        assert raw_post(r.url, body, [("X-Data-Class", "public")])[0] == 200
        ups["a"].control(mode="status", status=500)
        other = json.dumps({"model": "fake-model", "messages": MSG}).encode()
        assert raw_post(r.url, other, [("X-Data-Class", "public")])[0] == 200
        assert raw_post(r.url, body, [("X-Data-Class", "public")])[0] == 200
        text = _metrics(r.url)
    for family in (
        "requests_total",
        "fallbacks_total",
        "local_failures_total",
        "cache_total",
        "request_duration_seconds_bucket",
        "upstream_healthy",
    ):
        assert f"dsdeploy_router_{family}{{" in text, family
    assert check_metrics(text) == []
