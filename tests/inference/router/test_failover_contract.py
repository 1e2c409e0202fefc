"""The failover contract: sixteen upstream-fault scenarios, each against the router's DEFAULT configuration
(only the upstream, the cloud stand-in and the audit file are given), with the real `openai` client and the
audit line checked. `public` data may leave for the cloud, `internal` (the default class) may not.

The loopback cloud stand-in speaks the DeepSeek API's chat prefix completion (``/beta/chat/completions``,
last message ``{"role": "assistant", "content": <text so far>, "prefix": true}``); docs/router.md has the
contract as a table.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

import httpx
import openai
import pytest

from inference.router.config import parse_router_config

from .harness import CLOUD_KEY, run_router, until

MSG = [{"role": "user", "content": "tell me the plan"}]
TEXT = (
    "the plan has seven steps and every one of them is written down here so that a cut stream can be "
    "checked word for word"
)


def default_config(upstreams: list[str], cloud: str | None, audit_path) -> Any:
    data: dict[str, Any] = {"upstreams": [{"url": u} for u in upstreams], "audit": {"path": str(audit_path)}}
    if cloud is not None:
        data["cloud"] = {"base_url": cloud, "api_key": "${TEST_CLOUD_KEY}"}
    return parse_router_config(data, environ={"TEST_CLOUD_KEY": CLOUD_KEY})


def client(router, data_class: str | None, timeout: float = 60) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=router.v1,
        api_key="unused",
        max_retries=0,
        timeout=timeout,
        default_headers={"X-Data-Class": data_class} if data_class else None,
    )


def ask(router, data_class: str | None, **kw):
    """A non-streamed chat request: (raw response, parsed answer, seconds)."""
    started = time.monotonic()
    raw = client(router, data_class).chat.completions.with_raw_response.create(model="fake-model", messages=MSG, **kw)
    return raw, raw.parse(), time.monotonic() - started


def ask_stream(router, data_class: str | None, **kw) -> dict[str, Any]:
    """A streamed chat request as the client sees it: text, usage chunks, models, error, route, seconds."""
    started = time.monotonic()
    seen: dict[str, Any] = {"text": "", "usages": [], "models": set(), "ids": set(), "error": None, "finish": None}
    stream = client(router, data_class).chat.completions.create(
        model="fake-model", messages=MSG, stream=True, stream_options={"include_usage": True}, **kw
    )
    seen["route"] = stream.response.headers["x-dsdeploy-route"]
    try:
        for chunk in stream:
            seen["models"].add(chunk.model)
            seen["ids"].add(chunk.id)
            if chunk.usage is not None:
                seen["usages"].append(chunk.usage)
            for choice in chunk.choices:
                seen["text"] += choice.delta.content or ""
                seen["finish"] = choice.finish_reason or seen["finish"]
    except openai.APIError as exc:
        seen["error"] = exc
    seen["seconds"] = time.monotonic() - started
    return seen


def last_line(router, at_least: int = 1) -> dict[str, Any]:
    return router.audit_lines(at_least=at_least)[-1]


def chat_requests(fake) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["path"].endswith("/chat/completions")]


def client_requests(fake) -> list[dict[str, Any]]:
    return fake.client_requests()


# ----------------------------------------------------------------------------- 1, 2: rate limits
def test_s01_429_with_retry_after_within_the_cap_is_waited_out_locally(ups, tmp_path):
    a, cloud = ups["a"], ups["cloud"]
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        for data_class in ("internal", "public"):
            a.control(fail_next=1, status=429, retry_after="1")
            raw, answer, seconds = ask(r, data_class)
            assert raw.headers["x-dsdeploy-route"] == "local" and answer.model == "fake-model"
            assert seconds >= 0.9  # it waited as told
            line = last_line(r)
            assert (line["route"], line["status"], line["attempts"]) == ("local", 200, 2)
            assert line["failures"] == [f"127.0.0.1:{a.port}:upstream_429"]
    assert chat_requests(cloud) == []


def test_s01_429_with_a_long_retry_after_goes_to_the_cloud_or_back_with_its_retry_after(ups, tmp_path):
    a, cloud = ups["a"], ups["cloud"]
    a.control(mode="status", status=429, retry_after="30")
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        raw, answer, _ = ask(r, "public")
        assert raw.headers["x-dsdeploy-route"] == "cloud" and answer.model == "deepseek-chat"
        assert last_line(r)["fallback_reason"] == "upstream_429"
        with pytest.raises(openai.RateLimitError) as info:  # the openai client backs off as the engine told it
            ask(r, "internal")
        assert info.value.response.headers["retry-after"] == "30"
        assert info.value.response.headers["x-dsdeploy-route"] == "local"
        line = last_line(r, 2)
        assert (line["route"], line["status"], line["error"]) == ("local", 429, "upstream_rate_limited")
    assert len(chat_requests(cloud)) == 1


def test_s02_persistent_429_without_retry_after_backs_off_then_cloud_or_503(ups, tmp_path):
    a, cloud = ups["a"], ups["cloud"]
    a.control(mode="status", status=429)
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        raw, _, _ = ask(r, "public")
        assert raw.headers["x-dsdeploy-route"] == "cloud"
        line = last_line(r)
        assert (
            line["fallback_reason"] == "upstream_429"
            and line["failures"][:2] == [f"127.0.0.1:{a.port}:upstream_429"] * 2
        )  # one retry after a jittered backoff, then the cloud
        with pytest.raises(openai.InternalServerError) as info:
            ask(r, "internal")
        assert info.value.status_code == 503 and info.value.body["code"] == "local_pool_unavailable"
    assert len(chat_requests(cloud)) == 1


# ----------------------------------------------------------------------------- 3, 4, 5, 6: errors, resets, silence
@pytest.mark.parametrize("data_class", ["internal", "public"])
def test_s03_a_500_once_is_retried_on_the_same_upstream(ups, tmp_path, data_class):
    a, cloud = ups["a"], ups["cloud"]
    a.control(fail_next=1, status=500)
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        raw, answer, _ = ask(r, data_class)
        assert raw.headers["x-dsdeploy-route"] == "local" and answer.choices[0].message.content == "answer from a"
        line = last_line(r)
        assert (line["route"], line["attempts"], line["failures"]) == ("local", 2, [f"127.0.0.1:{a.port}:upstream_5xx"])
    assert chat_requests(cloud) == []


@pytest.mark.parametrize("fault", ["status503", "reset"])
def test_s04_s05_persistent_503_and_reset_go_to_the_cloud_within_one_try(ups, tmp_path, fault):
    a, cloud = ups["a"], ups["cloud"]
    a.control(mode="status", status=503) if fault == "status503" else a.control(mode="reset")
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        for stream in (False, True):
            if stream:
                seen = ask_stream(r, "public")
                assert seen["route"] == "cloud" and seen["error"] is None and seen["text"]
                seconds = seen["seconds"]
            else:
                raw, answer, seconds = ask(r, "public")
                assert raw.headers["x-dsdeploy-route"] == "cloud" and answer.model == "deepseek-chat"
            assert seconds < 5
            line = last_line(r, 1 + stream)
            assert line["route"] == "cloud" and line["fallback_reason"] in (
                "upstream_5xx",
                "connection_reset",
                "all_circuits_open",
            )
        with pytest.raises(openai.InternalServerError) as info:
            ask(r, "internal")
        assert info.value.status_code == 503
    assert len(chat_requests(cloud)) == 2


def test_s06_no_answer_at_all_is_found_by_the_probes(ups, tmp_path):
    a, cloud = ups["a"], ups["cloud"]
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        a.freeze()
        try:
            raw, _, seconds = ask(r, "public")
            assert raw.headers["x-dsdeploy-route"] == "cloud" and seconds < 5
            assert last_line(r)["route"] == "cloud"
        finally:
            a.thaw()
    assert len(chat_requests(cloud)) == 1


# ----------------------------------------------------------------------------- 7: slow first token
def test_s07_slow_first_token_is_answered_from_the_cloud_within_15_s_and_a_long_prefill_is_no_hang(ups, tmp_path):
    a, b, cloud = ups["a"], ups["b"], ups["cloud"]
    a.control(first_token_delay=20.0)
    b.control(prefill_tokens_per_s=2000)  # exported in its /metrics; a long prompt takes ~12 s to prefill
    long_prompt = [{"role": "user", "content": "word " * 20_000}]
    results: dict[str, Any] = {}
    with (
        run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as ra,
        run_router(default_config([b.url], cloud.url, tmp_path / "b.jsonl")) as rb,
    ):
        until(lambda: rb.app.pool.upstreams[0].prefill_rate is not None, "the saturation poll read b's prefill rate")
        jobs = {
            "public": lambda: ask_stream(ra, "public"),
            "internal": lambda: ask_stream(ra, "internal"),
            "long": lambda: _long(rb, long_prompt),
        }
        threads = [threading.Thread(target=lambda k=k, f=f: results.__setitem__(k, f())) for k, f in jobs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        public, internal, long = results["public"], results["internal"], results["long"]
        assert public["route"] == "cloud"
        assert public["error"] is None and public["seconds"] < 15 and public["models"] == {"deepseek-chat"}
        assert internal["error"] is None and internal["models"] == {"fake-model"}  # it waited: nowhere else to go
        assert long["error"] is None and long["models"] == {"fake-model"} and long["seconds"] > 8
        lines = ra.audit_lines(at_least=2)
        assert {line["data_class"]: line["route"] for line in lines} == {"public": "cloud", "internal": "local"}
        assert [line["fallback_reason"] for line in lines if line["route"] == "cloud"] == ["first_byte_timeout"]
        assert last_line(rb)["route"] == "local"


def _long(router, messages) -> dict[str, Any]:
    started = time.monotonic()
    out = client(router, "public").chat.completions.create(model="fake-model", messages=messages, stream=True)
    models = {c.model for c in out}
    return {"error": None, "models": models, "seconds": time.monotonic() - started}


# ----------------------------------------------------------------------------- 8, 9, 10, 11: broken streams
def _continued_stream_checks(r, a, cloud, seen, reason: str) -> None:
    """Continued from the cloud: one seamless answer, the text whole and once, one usage, the audit says so."""
    assert seen["error"] is None, seen["error"]
    assert seen["text"] == TEXT  # no gap, no duplicate
    assert seen["finish"] == "stop" and len(seen["usages"]) == 1
    assert seen["ids"] and len(seen["ids"]) == 1  # one completion id from start to end
    assert seen["models"] == {"fake-model", "deepseek-chat"}  # each part says who wrote it
    usage = seen["usages"][0]
    assert usage.completion_tokens == usage.total_tokens - usage.prompt_tokens > 0
    line = last_line(r)
    assert (line["route"], line["status"], line["error"], line["continuation"]) == ("local", 200, None, "cloud")
    assert line["fallback_reason"] == reason and f"127.0.0.1:{a.port}:{reason}" in line["failures"]
    (sent,) = chat_requests(cloud)
    assert sent["path"] == "/beta/chat/completions"
    prefix = sent["body"]["messages"][-1]
    assert prefix["role"] == "assistant" and prefix["prefix"] is True and TEXT.startswith(prefix["content"])
    assert prefix["content"] and sent["body"]["model"] == "deepseek-chat"


def _stream_error_checks(r, cloud, seen, code: str) -> None:
    """Ended with a clean error event: the client's iterator raises, nothing presented as complete."""
    assert isinstance(seen["error"], openai.APIError) and seen["finish"] is None
    assert seen["text"] and TEXT.startswith(seen["text"]) and seen["text"] != TEXT
    line = last_line(r)
    assert (line["route"], line["error"], line["continuation"]) == ("local", code, None)


def test_a_stream_ended_by_an_error_event_still_ends_with_done(ups, tmp_path):
    """The client's raw stream: the error event, then ``data: [DONE]``, as the server and vLLM end theirs."""
    a, cloud = ups["a"], ups["cloud"]
    a.control(text=TEXT, chunks=8, mode="cut_stream", cut_after=3)
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        body = {"model": "fake-model", "messages": MSG, "stream": True}
        with httpx.stream(
            "POST", r.v1 + "/chat/completions", json=body, timeout=30, headers={"X-Data-Class": "internal"}
        ) as response:
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "stream_interrupted", events[-3:]


@pytest.mark.parametrize("fault", ["cut_stream", "malformed_chunk"])
def test_s08_s10_a_cut_or_malformed_stream_is_continued_from_the_cloud(ups, tmp_path, fault):
    a, cloud = ups["a"], ups["cloud"]
    for fake in (a, cloud):
        fake.control(text=TEXT, chunks=8)
    a.control(mode=fault, cut_after=3)
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        seen = ask_stream(r, "public")
        assert seen["route"] == "local"
        _continued_stream_checks(
            r, a, cloud, seen, "stream_interrupted" if fault == "cut_stream" else "malformed_response"
        )


def _spend(router) -> float:
    with urllib.request.urlopen(router.url + "/metrics") as resp:
        text = resp.read().decode()
    (value,) = [
        float(x.split()[1]) for x in text.splitlines() if x.startswith("dsdeploy_router_cloud_spend_usd_total ")
    ]
    return value


def _raw_stream(router, body: bytes) -> None:
    """A public stream sent as these exact bytes (their size is what the router estimates the prompt from)."""
    headers = {"X-Data-Class": "public", "Content-Type": "application/json"}
    with httpx.stream("POST", router.v1 + "/chat/completions", content=body, headers=headers, timeout=30) as resp:
        assert resp.status_code == 200
        for _ in resp.iter_lines():
            pass


def test_a_cloud_stream_cut_before_its_usage_is_charged_its_prompt_estimated_from_the_request(ups, tmp_path):
    """No usage came (the cloud's stream broke first), yet the cloud billed the prompt: the spend (and the
    budgets, which count the same tokens) gets the request's size over CHARS_PER_TOKEN, not 0; a continuation
    the cloud took and then cut is charged too (it was not charged at all: the request counted as local)."""
    from inference.router.record import estimated_tokens

    a, cloud = ups["a"], ups["cloud"]
    body = json.dumps({"model": "fake-model", "messages": MSG * 40, "stream": True}).encode()
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        price = r.app.config.cloud.prices["deepseek-chat"]
        a.control(mode="status", status=503)
        cloud.control(text=TEXT, chunks=8, mode="cut_stream", cut_after=3)
        _raw_stream(r, body)
        line = last_line(r)
        assert (line["route"], line["error"], line["completion_tokens"]) == ("cloud", "stream_interrupted", 3)
        spent = _spend(r)
        assert spent == pytest.approx(price.cost_usd(estimated_tokens(len(body)), 3))
        # the local stream is cut after 3 tokens, the cloud continues it and is cut after 2 more
        a.control(mode="cut_stream", status=200, text=TEXT, chunks=8, cut_after=3)
        cloud.control(cut_after=2)
        _raw_stream(r, body)
        line = last_line(r, 2)
        assert (line["route"], line["continuation"]) == ("local", None) and "cloud:stream_interrupted" in line[
            "failures"
        ]
        assert _spend(r) - spent == pytest.approx(price.cost_usd(estimated_tokens(len(body)) + 3, 2))


@pytest.mark.parametrize("fault", ["cut_stream", "malformed_chunk"])
def test_s08_s10_a_cut_or_malformed_stream_of_data_that_may_not_leave_ends_with_an_error_event(ups, tmp_path, fault):
    a, cloud = ups["a"], ups["cloud"]
    a.control(text=TEXT, chunks=8, mode=fault, cut_after=3)
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        seen = ask_stream(r, "internal")
        _stream_error_checks(r, cloud, seen, "stream_interrupted" if fault == "cut_stream" else "malformed_response")
    assert chat_requests(cloud) == []


def test_s09_a_stalled_stream_is_continued_from_the_cloud(ups, tmp_path):
    a, cloud = ups["a"], ups["cloud"]
    for fake in (a, cloud):
        fake.control(text=TEXT, chunks=8)
    a.control(mode="stall", cut_after=3)
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        seen = ask_stream(r, "public")
        _continued_stream_checks(r, a, cloud, seen, "stream_stalled")
        assert seen["seconds"] < 15


def test_s09_a_stream_whose_engine_freezes_ends_with_an_error_event_when_it_may_not_leave(ups, tmp_path):
    a, cloud = ups["a"], ups["cloud"]
    a.control(text=TEXT, chunks=8, chunk_delay=0.5)
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        threading.Timer(1.2, a.freeze).start()
        try:
            seen = ask_stream(r, "internal")
        finally:
            time.sleep(0.3)
            a.thaw()
        _stream_error_checks(r, cloud, seen, "stream_stalled")
        assert seen["seconds"] < 10  # found by the probes, not after timeouts.stream_idle_s
    assert chat_requests(cloud) == []


@pytest.mark.parametrize("data_class", ["internal", "public"])
def test_s11_a_stream_that_ends_without_done_but_with_a_finish_reason_is_complete(ups, tmp_path, data_class):
    a, cloud = ups["a"], ups["cloud"]
    a.control(text=TEXT, chunks=8, mode="no_done")
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        seen = ask_stream(r, data_class)
        assert seen["error"] is None and seen["text"] == TEXT and seen["finish"] == "stop"
        line = last_line(r)
        assert (line["route"], line["error"], line["continuation"]) == ("local", None, None)
    assert chat_requests(cloud) == []


@pytest.mark.parametrize("data_class", ["internal", "public"])
def test_s11_an_engine_silent_after_the_finish_reason_still_gives_a_complete_answer(ups, tmp_path, data_class):
    """Frozen between the last token and the usage event / [DONE]: nothing is missing from the answer, so it
    ends as complete (no error event, no continuation), once the stall deadline passes."""
    a, cloud = ups["a"], ups["cloud"]
    a.control(text=TEXT, chunks=8, mode="silent_after_finish")
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        seen = ask_stream(r, data_class)
        assert seen["error"] is None and seen["text"] == TEXT and seen["finish"] == "stop"
        line = last_line(r)
        assert (line["route"], line["error"], line["continuation"]) == ("local", None, None)
        assert line["completion_tokens"] > 0  # counted from the events: no usage came
    assert chat_requests(cloud) == []


# ----------------------------------------------------------------------------- 12, 13: the request's own fault
def test_s12_context_length_exceeded_goes_to_the_longer_cloud_context_or_back_unchanged(ups, tmp_path):
    a, cloud = ups["a"], ups["cloud"]
    a.control(mode="context_length")
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        raw, answer, _ = ask(r, "public")
        assert raw.headers["x-dsdeploy-route"] == "cloud" and answer.model == "deepseek-chat"
        assert last_line(r)["fallback_reason"] == "context_length_exceeded"
        with pytest.raises(openai.BadRequestError) as info:
            ask(r, "internal")
        assert "maximum context length is 2048 tokens" in info.value.message  # the engine's own words
        assert info.value.response.headers["x-dsdeploy-route"] == "local"
        line = last_line(r, 2)
        assert (line["route"], line["status"]) == ("local", 400)
    assert len(chat_requests(cloud)) == 1


def test_s13_a_content_filter_refusal_is_passed_back_and_never_retried(ups, tmp_path):
    a, cloud = ups["a"], ups["cloud"]
    a.control(mode="content_filter")
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        raw, answer, _ = ask(r, "public")
        assert raw.headers["x-dsdeploy-route"] == "local" and answer.choices[0].finish_reason == "content_filter"
        seen = ask_stream(r, "public")
        assert seen["error"] is None and seen["finish"] == "content_filter" and seen["route"] == "local"
        assert last_line(r, 2)["continuation"] is None
        # the cloud's own refusal (DeepSeek answers 400 "Content Exists Risk") goes back as it came
        a.control(mode="status", status=503)
        cloud.control(mode="status", status=400)
        with pytest.raises(openai.BadRequestError, match="cloud says 400"):
            ask(r, "public")
    assert len(chat_requests(cloud)) == 1


# ----------------------------------------------------------------------------- 14: a fallback that refuses the prefill
def test_s14_a_cut_stream_whose_fallback_refuses_the_prefix_ends_with_a_clean_error(ups, tmp_path):
    a, cloud = ups["a"], ups["cloud"]
    for fake in (a, cloud):
        fake.control(text=TEXT, chunks=8)
    a.control(mode="cut_stream", cut_after=3)
    cloud.control(refuse_prefix=True)
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        seen = ask_stream(r, "public")
        _stream_error_checks(r, cloud, seen, "stream_interrupted")
        line = last_line(r)
        assert "cloud:prefix_refused_400" in line["failures"]
    assert len(chat_requests(cloud)) == 1


# ----------------------------------------------------------------------------- 15: the primary down for a while
def _outage(ups, tmp_path, down_s: float, warming_s: float) -> None:
    a, cloud = ups["a"], ups["cloud"]
    routes: list[tuple[float, str, bool]] = []
    stop = threading.Event()
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:

        def load() -> None:
            while not stop.is_set():
                try:
                    raw, answer, _ = ask(r, "public")
                    routes.append((time.monotonic(), raw.headers["x-dsdeploy-route"], bool(answer.choices)))
                except openai.APIError as exc:
                    routes.append((time.monotonic(), f"error {exc}", False))
                time.sleep(0.05)

        worker = threading.Thread(target=load)
        worker.start()
        try:
            time.sleep(1.0)
            a.kill()
            time.sleep(down_s)
            a.start(mode="status", status=503)  # up again; its chat path fails while /health answers (warming up)
            warming_until = time.monotonic() + warming_s
            time.sleep(warming_s)
            a.control(mode="ok")
            healthy_at = time.monotonic()
            time.sleep(5.0)
        finally:
            stop.set()
            worker.join()
        failed = [x for x in routes if not x[2]]
        assert failed == [] and len(routes) > 20
        back = [t for t, route, _ in routes if route == "local" and t > healthy_at]
        assert back and back[0] - healthy_at < 3.0  # back on local within a few seconds
        assert all(route == "local" for t, route, _ in routes if t > back[0] + 0.5)
        sent_while_warming = [x for x in client_requests(a)]
        assert len(sent_while_warming) == len([t for t, route, _ in routes if route == "local" and t > warming_until])
        lines = r.audit_lines(at_least=len(routes))
        assert {line["route"] for line in lines} == {"local", "cloud"}
        assert all(line["status"] == 200 for line in lines)


def test_s15_primary_down_then_warming_then_healthy_every_request_is_served(ups, tmp_path):
    _outage(ups, tmp_path, down_s=4.0, warming_s=3.0)


@pytest.mark.slow
def test_s15_primary_down_for_a_minute(ups, tmp_path):
    _outage(ups, tmp_path, down_s=60.0, warming_s=5.0)


# ----------------------------------------------------------------------------- 16: accounting
def test_s16_model_usage_header_and_audit_line_agree_on_who_served(ups, tmp_path):
    a, cloud = ups["a"], ups["cloud"]
    with run_router(default_config([a.url], cloud.url, tmp_path / "a.jsonl")) as r:
        raw, answer, _ = ask(r, "public")
        assert (raw.headers["x-dsdeploy-route"], answer.model) == ("local", "fake-model")
        a.control(mode="status", status=503)
        cloud.control(usage={"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16})
        raw, answer, _ = ask(r, "public")
        assert (raw.headers["x-dsdeploy-route"], answer.model) == ("cloud", "deepseek-chat")
        assert answer.usage.completion_tokens == 5
        seen = ask_stream(r, "public")
        assert seen["route"] == "cloud" and seen["models"] == {"deepseek-chat"} and len(seen["usages"]) == 1
        lines = r.audit_lines(at_least=3)
        assert [line["route"] for line in lines] == ["local", "cloud", "cloud"]
        assert [(line["prompt_tokens"], line["completion_tokens"]) for line in lines] == [(7, 3), (11, 5), (11, 5)]
        with urllib.request.urlopen(r.url + "/metrics") as resp:
            text = resp.read().decode()
        (spend,) = [
            float(x.split()[1]) for x in text.splitlines() if x.startswith("dsdeploy_router_cloud_spend_usd_total ")
        ]
        assert spend == pytest.approx(2 * (11 * 0.28 + 5 * 0.42) / 1e6)
        # a stream nobody asked usage for still has its tokens counted (the router asks the cloud for them)
        out = client(r, "public").chat.completions.create(model="fake-model", messages=MSG, stream=True)
        assert all(chunk.usage is None for chunk in out)
        line = last_line(r, 4)
        assert (line["route"], line["prompt_tokens"], line["completion_tokens"]) == ("cloud", 11, 5)
