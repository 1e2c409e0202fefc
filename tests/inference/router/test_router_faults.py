"""Fault injection: 5xx, 429 + Retry-After, malformed bodies, slow first byte, cut streams, dead and
frozen upstreams, saturation. Restricted requests never reach the cloud stand-in, whatever fails."""

from __future__ import annotations

import threading
import urllib.request

import openai
import pytest

from .harness import router_config, run_router, until

MSG = [{"role": "user", "content": "hi"}]


def client(router, data_class: str | None = None, timeout: float = 20) -> openai.OpenAI:
    headers = {"X-Data-Class": data_class} if data_class else None
    return openai.OpenAI(base_url=router.v1, api_key="unused", max_retries=0, timeout=timeout, default_headers=headers)


def chat(router, data_class: str | None = None, **kw):
    return client(router, data_class).chat.completions.with_raw_response.create(model="fake-model", messages=MSG, **kw)


def test_5xx_tries_other_local_upstream_before_cloud(ups, tmp_path):
    ups["a"].control(mode="status", status=500)
    with run_router(router_config([ups["a"].url, ups["b"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        for _ in range(4):
            raw = chat(r, "public")
            assert raw.headers["x-dsdeploy-route"] == "local"
            assert raw.parse().choices[0].message.content == "answer from b"
        ups["b"].control(mode="status", status=502)
        raw = chat(r, "public")
        assert raw.headers["x-dsdeploy-route"] == "cloud"
        line = r.audit_lines()[-1]
        assert line["route"] == "cloud" and line["fallback_reason"] in ("upstream_5xx", "all_circuits_open")
    assert len(ups["cloud"].requests()) == 1


def test_local_429_with_retry_after_falls_back_and_cloud_retries_honour_it(ups, tmp_path):
    ups["a"].control(mode="status", status=429, retry_after="0")  # waited out (0 s), retried once, then the cloud
    ups["cloud"].control(fail_next=2, status=429, retry_after="0.2")
    with run_router(router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        waits: list[float] = []
        real_sleep = r.app.cloud._sleep

        async def recording_sleep(seconds: float) -> None:
            waits.append(seconds)
            await real_sleep(seconds)

        r.app.cloud._sleep = recording_sleep
        raw = chat(r, "public")
        assert raw.headers["x-dsdeploy-route"] == "cloud"
        line = r.audit_lines()[-1]
        assert line["fallback_reason"] == "upstream_429" and line["attempts"] == 2 + 3
    assert len(ups["cloud"].requests()) == 3
    assert waits == [0.2, 0.2]  # the cloud's Retry-After, not the jittered backoff (base 0.05 s)


def test_cloud_asking_for_a_longer_wait_than_the_cap_is_not_retried(ups, tmp_path):
    ups["a"].control(mode="status", status=500)
    ups["cloud"].control(mode="status", status=429, retry_after="30")  # the harness caps backoff at 0.5 s
    with run_router(router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        with pytest.raises(openai.RateLimitError) as info:
            chat(r, "public")
        assert info.value.response.headers["retry-after"] == "30"
        assert info.value.response.headers["x-dsdeploy-route"] == "cloud"
    assert len(ups["cloud"].requests()) == 1  # one try, no retries inside the window the API asked for


def test_cloud_exhausted_gives_clear_error_not_500(ups, tmp_path):
    ups["a"].control(mode="status", status=500)
    ups["cloud"].control(mode="status", status=503)
    with run_router(router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        with pytest.raises(openai.APIStatusError) as info:
            chat(r, "public")
        assert info.value.status_code == 502
        assert "cloud fallback failed after 3 attempt(s)" in info.value.message
        assert info.value.response.headers["x-dsdeploy-route"] == "cloud"  # it did leave the premises
        line = r.audit_lines()[-1]
        assert (line["route"], line["status"], line["fallback_reason"]) == ("cloud", 502, "upstream_5xx")
        assert line["failures"][-1] == "cloud:upstream_5xx"


def test_cloud_refusing_the_routers_key_is_a_502_not_the_clients_401(ups, tmp_path):
    ups["a"].control(mode="status", status=500)
    ups["cloud"].control(mode="status", status=401)
    with run_router(router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        with pytest.raises(openai.APIStatusError) as info:
            chat(r, "public")
        assert info.value.status_code == 502 and info.value.body["code"] == "cloud_key_rejected"
        ups["cloud"].control(mode="status", status=400)
        with pytest.raises(openai.BadRequestError, match="cloud says 400"):  # the request's fault: unchanged
            chat(r, "public")


def test_malformed_local_body_is_retried_elsewhere(ups, tmp_path):
    ups["a"].control(mode="malformed")
    with run_router(router_config([ups["a"].url, ups["b"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        for _ in range(3):
            assert chat(r).parse().choices[0].message.content == "answer from b"
        ups["b"].control(mode="malformed")
        raw = chat(r, "public")
        assert raw.headers["x-dsdeploy-route"] == "cloud"
    assert len(ups["cloud"].requests()) == 1


def test_local_4xx_goes_back_unchanged(ups, tmp_path):
    ups["a"].control(mode="status", status=400)
    with run_router(router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        with pytest.raises(openai.BadRequestError) as info:
            chat(r, "public")
        assert info.value.message.endswith("a says 400")
    assert ups["cloud"].requests() == []


def test_slow_first_byte_goes_elsewhere_but_slow_streams_are_not_hangs(ups, tmp_path):
    ups["a"].control(delay=1.5)
    cfg = router_config(
        [ups["a"].url, ups["b"].url],
        None,
        tmp_path / "a.jsonl",
        timeouts={"first_byte_s": 0.4, "response_s": 0.4},
        retries={"local_attempts": 2},
    )
    with run_router(cfg) as r:
        for stream in (False, True, False, True, False, True):
            out = client(r).chat.completions.create(model="fake-model", messages=MSG, stream=stream)
            text = "".join(c.choices[0].delta.content or "" for c in out) if stream else out.choices[0].message.content
            assert "answer from b" in text
        reasons = [f for line in r.audit_lines() for f in line["failures"]]
        assert any(f.endswith(":first_byte_timeout") for f in reasons)
        assert any(f.endswith(":response_timeout") for f in reasons)
    # A long generation that keeps streaming on a healthy upstream is served in full by it.
    ups["a"].control(delay=0.0, chunks=8, chunk_delay=0.25)
    cfg = router_config([ups["a"].url, ups["b"].url], None, tmp_path / "b.jsonl", timeouts={"first_byte_s": 0.4})
    with run_router(cfg) as r:
        ups["b"].control(mode="status", status=500)
        out = client(r).chat.completions.create(model="fake-model", messages=MSG, stream=True)
        assert len([c for c in out if c.choices and c.choices[0].delta.content]) == 8
        assert r.audit_lines()[-1]["error"] is None


def test_stream_cut_after_first_byte_ends_with_error_event(ups, tmp_path):
    ups["a"].control(mode="cut_stream", chunks=6)
    with run_router(router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        got = []
        with pytest.raises(openai.APIError) as info:  # internal data: not continued from the cloud
            for chunk in client(r).chat.completions.create(model="fake-model", messages=MSG, stream=True):
                got.append(chunk.choices[0].delta.content)
        assert "ended before the answer was complete" in str(info.value)
        assert 1 <= len(got) < 6
        line = r.audit_lines()[-1]
        assert line["error"] == "stream_interrupted" and line["route"] == "local"
        with urllib.request.urlopen(r.url + "/metrics") as resp:
            assert 'dsdeploy_router_stream_errors_total{route="local"} 1.0' in resp.read().decode()
    assert ups["cloud"].requests() == []  # bytes had reached the client, and the data may not leave


@pytest.mark.parametrize("fault", ["status500", "status429", "malformed", "slow", "killed", "cut_before_byte"])
def test_restricted_never_reaches_cloud(ups, tmp_path, fault):
    a = ups["a"]
    if fault == "status500":
        a.control(mode="status", status=500)
    elif fault == "status429":
        a.control(mode="status", status=429, retry_after="1")
    elif fault == "malformed":
        a.control(mode="malformed")
    elif fault == "slow":
        a.control(delay=2.0)
    elif fault == "killed":
        a.kill()
    elif fault == "cut_before_byte":
        a.control(mode="cut_stream", chunks=0)
    cfg = router_config(
        [a.url],
        ups["cloud"].url,
        tmp_path / "a.jsonl",
        timeouts={"first_byte_s": 0.3, "response_s": 0.3},
        wait_queue={"deadline_s": 0.3},
    )
    with run_router(cfg) as r:
        for data_class in ("restricted", None, "internal"):
            with pytest.raises(openai.APIStatusError) as info:
                chat(r, data_class, stream=fault == "cut_before_byte")
            if fault == "status429":  # the engine asked for a wait: the client gets its 429 and Retry-After
                assert info.value.status_code == 429 and info.value.response.headers["retry-after"] == "1"
                assert info.value.body["code"] == "upstream_rate_limited"
            elif fault == "killed":  # no engine ready: it waited for one (wait_queue), then the 503
                assert info.value.status_code == 503
                assert info.value.body["code"] == "local_pool_not_ready"
            else:
                assert info.value.status_code == 503
                assert info.value.body["code"] == "local_pool_unavailable"
            assert "may not leave the premises" in info.value.message
            assert info.value.response.headers["x-dsdeploy-route"] == "local"
        assert chat(r, "public").headers["x-dsdeploy-route"] == "cloud"
    seen = ups["cloud"].requests()
    assert len(seen) == 1 and seen[0]["headers"].get("x-data-class") is None


def test_spill_over_on_saturation_before_errors(ups, tmp_path):
    ups["a"].control(waiting=20)
    cfg = router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl", saturation={"max_waiting": 8})
    with run_router(cfg) as r:
        until(lambda: r.app.pool.upstreams[0].waiting == 20, "a metrics poll")
        assert chat(r, "public").headers["x-dsdeploy-route"] == "cloud"
        assert chat(r, "restricted").headers["x-dsdeploy-route"] == "local"  # queues locally, never leaves
        assert r.audit_lines()[0]["fallback_reason"] == "saturated"
    # the router's own in-flight count against a configured capacity
    ups["a"].control(waiting=0, delay=1.0)
    cfg = router_config(
        [ups["a"].url], ups["cloud"].url, tmp_path / "b.jsonl", saturation={"max_in_flight_per_upstream": 1}
    )
    with run_router(cfg) as r:
        routes: list[str] = []
        threads = [
            threading.Thread(target=lambda: routes.append(chat(r, "public").headers["x-dsdeploy-route"]))
            for _ in range(2)
        ]
        threads[0].start()
        until(lambda: r.app.pool.upstreams[0].in_flight == 1, "the first request on the engine")
        threads[1].start()
        for t in threads:
            t.join()
        assert sorted(routes) == ["cloud", "local"]


def test_cloud_only_mode(ups, tmp_path):
    with run_router(router_config([], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        raw = chat(r, "public")
        assert raw.headers["x-dsdeploy-route"] == "cloud"
        assert raw.parse().choices[0].message.content == "answer from cloud"
        with pytest.raises(openai.APIStatusError) as info:
            chat(r, "restricted")
        assert info.value.status_code == 503
    assert len(ups["cloud"].requests()) == 1


def test_client_leaving_mid_stream_releases_the_upstream(ups, tmp_path):
    ups["a"].control(chunks=40, chunk_delay=0.25)  # a 10 s generation
    with run_router(router_config([ups["a"].url], None, tmp_path / "a.jsonl")) as r:
        stream = client(r).chat.completions.create(model="fake-model", messages=MSG, stream=True)
        first = next(iter(stream))
        assert first.choices[0].delta.content == "answer from a part 0 "
        stream.close()  # the client goes away
        line = r.audit_lines()[-1]
        assert line["error"] == "client_disconnected" and line["status"] == 200
        assert line["latency_ms"] < 5000  # released long before the generation would have ended
        assert r.app.pool.upstreams[0].in_flight == 0


def test_stream_gone_silent_ends_with_idle_error_event(ups, tmp_path):
    ups["a"].control(chunks=4, chunk_delay=1.5)
    cfg = router_config([ups["a"].url], None, tmp_path / "a.jsonl", timeouts={"stream_idle_s": 0.4})
    with run_router(cfg) as r:
        with pytest.raises(openai.APIError, match="sent nothing for 0.4 s"):
            for _ in client(r).chat.completions.create(model="fake-model", messages=MSG, stream=True):
                pass
        assert r.audit_lines()[-1]["error"] == "stream_idle_timeout"


def test_stream_falls_back_to_cloud_before_first_byte_and_spend_is_counted(ups, tmp_path):
    ups["a"].control(mode="status", status=503)
    ups["cloud"].control(chunks=3)
    with run_router(router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl")) as r:
        out = client(r, "public").chat.completions.create(
            model="fake-model", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
        parts = [c.choices[0].delta.content for c in out if c.choices and c.choices[0].delta.content]
        assert out.response.headers["x-dsdeploy-route"] == "cloud"
        assert parts == [f"answer from cloud part {i} " for i in range(3)]
        line = r.audit_lines()[-1]
        assert line["route"] == "cloud" and line["fallback_reason"] == "upstream_5xx" and line["error"] is None
        with urllib.request.urlopen(r.url + "/metrics") as resp:
            text = resp.read().decode()
        assert 'dsdeploy_router_fallbacks_total{reason="upstream_5xx"} 1.0' in text
        (spend,) = [
            float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("dsdeploy_router_cloud_spend_usd_total ")
        ]
        assert spend == pytest.approx((7 * 0.28 + 3 * 0.42) / 1e6)


def test_per_key_default_class_keeps_a_teams_data_home(ups, tmp_path):
    import hashlib

    ups["a"].control(mode="status", status=500)
    keys = [
        {"id": "legal", "sha256": hashlib.sha256(b"legal-key").hexdigest(), "default_class": "restricted"},
        {"id": "web", "sha256": hashlib.sha256(b"web-key").hexdigest(), "default_class": "public"},
    ]
    cfg = router_config([ups["a"].url], ups["cloud"].url, tmp_path / "a.jsonl", auth={"keys": keys})
    with run_router(cfg) as r:
        legal = openai.OpenAI(base_url=r.v1, api_key="legal-key", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            legal.chat.completions.create(model="fake-model", messages=MSG)
        assert info.value.status_code == 503 and "'restricted' may not leave" in info.value.message
        web = openai.OpenAI(base_url=r.v1, api_key="web-key", max_retries=0)
        assert (
            web.chat.completions.with_raw_response.create(model="fake-model", messages=MSG).headers["x-dsdeploy-route"]
            == "cloud"
        )
        explicit = legal.chat.completions.with_raw_response.create(  # a request may say it is public
            model="fake-model", messages=MSG, extra_headers={"X-Data-Class": "public"}
        )
        assert explicit.headers["x-dsdeploy-route"] == "cloud"
        lines = r.audit_lines(at_least=3)
    assert [(line["key_id"], line["data_class"], line["route"]) for line in lines] == [
        ("legal", "restricted", "local"),
        ("web", "public", "cloud"),
        ("legal", "public", "cloud"),
    ]
    assert len(ups["cloud"].requests()) == 2


def test_per_key_min_class_is_a_floor_a_header_cannot_lower(ups, tmp_path):
    import hashlib

    ups["a"].control(mode="status", status=500)
    keys = [{"id": "records", "sha256": hashlib.sha256(b"records-key").hexdigest(), "min_class": "internal"}]
    cfg = router_config(
        [ups["a"].url],
        ups["cloud"].url,
        tmp_path / "a.jsonl",
        auth={"keys": keys},
        policy={"default_class": "public", "cloud_allowed": ["public"]},
    )
    with run_router(cfg) as r:
        records = openai.OpenAI(base_url=r.v1, api_key="records-key", max_retries=0)
        for header in (None, "public", "restricted"):
            with pytest.raises(openai.APIStatusError) as info:
                records.chat.completions.create(
                    model="fake-model", messages=MSG, extra_headers={"X-Data-Class": header} if header else None
                )
            assert info.value.status_code == 503
        lines = r.audit_lines(at_least=3)
    assert [line["data_class"] for line in lines] == ["internal", "internal", "restricted"]
    assert ups["cloud"].requests() == []
