"""The router as capacity manager: cold starts (the wait queue), rollouts that lose nothing, overflow by a
time-to-first-token target. Real fake engines in their own processes, the real router, the real `openai`
client, the audit lines checked."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest

from inference.router.config import parse_router_config
from inference.router.engine_metrics import engine_sums
from inference.router.latency_target import TtftEstimator
from inference.router.pool import OVER_TTFT_TARGET, UpstreamPool

from .harness import FakeProcess, router_config, run_router, until

MSG = [{"role": "user", "content": "how many engines are up"}]


def client(router, data_class: str, timeout: float = 60) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=router.v1,
        api_key="unused",
        max_retries=0,
        timeout=timeout,
        default_headers={"X-Data-Class": data_class},
    )


def ask(router, data_class: str, stream: bool = False) -> tuple[str, str]:
    """(route header, answer text) of one chat request."""
    c = client(router, data_class).chat.completions
    if stream:
        out = c.create(model="fake-model", messages=MSG, stream=True)
        text = "".join(ch.choices[0].delta.content or "" for ch in out if ch.choices)
        return out.response.headers["x-dsdeploy-route"], text
    raw = c.with_raw_response.create(model="fake-model", messages=MSG)
    return raw.headers["x-dsdeploy-route"], raw.parse().choices[0].message.content or ""


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except Exception as exc:  # the test looks at it
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, out


def metric(router, name: str) -> float:
    with urllib.request.urlopen(router.url + "/metrics") as resp:
        text = resp.read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


@pytest.fixture()
def cold() -> Any:
    """An engine of this test's own, not started yet (scaled to zero, or loading)."""
    engine = FakeProcess("cold")
    yield engine
    engine.kill()


# ----------------------------------------------------------------------------- cold starts
def test_with_no_engine_ready_data_that_may_leave_goes_to_the_cloud_and_the_rest_waits_for_the_engine(
    ups, cold, tmp_path
):
    cloud = ups["cloud"]
    with run_router(router_config([cold.url], cloud.url, tmp_path / "a.jsonl")) as r:
        route, _ = ask(r, "public")
        assert route == "cloud"
        assert metric(r, "dsdeploy_router_cold_cloud_requests_total") == 1  # demand that may wake the engines
        t, out = in_thread(lambda: ask(r, "internal"))
        t2, out2 = in_thread(lambda: ask(r, "restricted", stream=True))
        until(lambda: r.app.pool.wait_queue.waiting == 2, "two requests waiting")
        assert metric(r, "dsdeploy_router_waiting_requests") == 2  # what KEDA scales on
        cold.start()  # the engine turns ready: the waiters go to it
        t.join()
        t2.join()
        assert out["value"] == ("local", "answer from cold")
        assert out2["value"][0] == "local" and out2["value"][1].startswith("answer from cold part 0")
        assert r.app.pool.wait_queue.waiting == 0
        lines = {line["data_class"]: line for line in r.audit_lines(at_least=3)}
        assert lines["public"]["route"] == "cloud" and lines["public"]["queued_ms"] is None
        for cls in ("internal", "restricted"):
            line = lines[cls]
            assert (line["route"], line["status"], line["upstream"]) == ("local", 200, f"127.0.0.1:{cold.port}")
            assert line["queued_ms"] > 0 and line["queued_reason"] in ("connect_refused", "all_circuits_open")
        assert metric(r, 'dsdeploy_router_wait_queue_total{outcome="served"}') == 2
        assert ask(r, "public")[0] == "local"  # an engine is up: local first, and no more cold demand
        assert metric(r, "dsdeploy_router_cold_cloud_requests_total") == 1
    assert all(req["body"]["model"] == "deepseek-chat" for req in cloud.requests())  # only public left


def test_a_waiter_gets_a_503_with_retry_after_at_the_deadline_never_a_hang(ups, cold, tmp_path):
    config = router_config(
        [cold.url], ups["cloud"].url, tmp_path / "a.jsonl", wait_queue={"deadline_s": 0.5, "retry_after_s": 7}
    )
    with run_router(config) as r:
        with pytest.raises(openai.InternalServerError) as info:
            ask(r, "restricted")
        assert info.value.status_code == 503 and info.value.body["code"] == "local_pool_not_ready"
        assert info.value.response.headers["retry-after"] == "7"
        line = r.audit_lines()[-1]
        assert (line["status"], line["error"], line["route"]) == (503, "local_pool_not_ready", "local")
        assert line["queued_ms"] >= 500 and line["queued_reason"]
    assert ups["cloud"].requests() == []


def test_the_wait_queue_is_bounded_and_a_full_queue_refuses_at_once(ups, cold, tmp_path):
    config = router_config([cold.url], None, tmp_path / "a.jsonl", wait_queue={"max_requests": 2})
    with run_router(config) as r:
        waiters = [in_thread(lambda: ask(r, "internal")) for _ in range(2)]
        until(lambda: r.app.pool.wait_queue.waiting == 2, "two requests waiting")
        refused: list[Any] = []
        flood = [in_thread(lambda: ask(r, "internal")) for _ in range(30)]  # hostile: far more than the bound
        for t, out in flood:
            t.join()
            refused.append(out.get("error"))
        assert r.app.pool.wait_queue.waiting == 2  # the flood never got in
        assert all(
            isinstance(e, openai.InternalServerError)
            and e.body["code"] == "wait_queue_full"
            and e.response.headers["retry-after"] == "10"
            for e in refused
        )
        cold.start()
        for t, out in waiters:
            t.join()
            assert out["value"][0] == "local"
        lines = r.audit_lines(at_least=32)
        assert sorted(line["error"] or "" for line in lines).count("wait_queue_full") == 30
        assert metric(r, 'dsdeploy_router_wait_queue_total{outcome="full"}') == 30


def test_an_engine_that_answers_its_probes_but_fails_requests_is_not_waited_for(ups, tmp_path):
    """Not a cold start: the 503 comes at once, as before the wait queue (the failover contract's s04)."""
    a = ups["a"]
    a.control(mode="status", status=500)
    with run_router(router_config([a.url], None, tmp_path / "a.jsonl")) as r:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError) as info:
                ask(r, "internal")
            assert info.value.body["code"] == "local_pool_unavailable"
        assert all(line["queued_ms"] is None for line in r.audit_lines(at_least=2))


def test_wait_queue_disabled_refuses_at_once(ups, cold, tmp_path):
    config = router_config([cold.url], None, tmp_path / "a.jsonl", wait_queue={"enabled": False})
    with run_router(config) as r:
        with pytest.raises(openai.InternalServerError) as info:
            ask(r, "internal")
        assert info.value.body["code"] == "local_pool_unavailable"
        assert r.audit_lines()[-1]["queued_ms"] is None


def test_wait_queue_config_is_checked():
    from inference.router.env_refs import RouterConfigError

    for bad, field in (
        ({"max_requests": 0}, "wait_queue.max_requests"),
        ({"deadline_s": -1}, "wait_queue.deadline_s"),
        ({"size": 3}, "wait_queue.size"),
    ):
        with pytest.raises(RouterConfigError, match=field.replace(".", r"\.")):
            parse_router_config({"upstreams": [{"url": "http://127.0.0.1:1"}], "wait_queue": bad})
    with pytest.raises(RouterConfigError, match=r"slo\.leave_ratio"):
        parse_router_config({"upstreams": [{"url": "http://127.0.0.1:1"}], "slo": {"ttft_s": 1, "leave_ratio": 1.5}})


# ----------------------------------------------------------------------------- rollouts
@pytest.fixture()
def pair() -> Any:
    engines = [FakeProcess("one"), FakeProcess("two")]
    for e in engines:
        e.start(chunks=6, chunk_delay=0.05)
    yield engines
    for e in engines:
        e.kill()


def test_a_rollout_restarting_both_engines_one_after_the_other_under_load_loses_nothing(ups, pair, tmp_path):
    """Each engine drains on SIGTERM (503 on /health and on new requests, open ones finish) and comes back:
    no request fails, streams included, and restricted data never leaves."""
    cloud = ups["cloud"]
    results: list[tuple[str, str, bool]] = []  # (class, route or error, stream)
    stop = threading.Event()
    with run_router(router_config([e.url for e in pair], cloud.url, tmp_path / "a.jsonl")) as r:

        def load(cls: str, stream: bool) -> None:
            while not stop.is_set():
                try:
                    route, text = ask(r, cls, stream)
                    results.append((cls, route if text.startswith("answer from") else f"bad answer {text!r}", stream))
                except openai.APIError as exc:
                    results.append((cls, f"error {exc}", stream))

        workers = [
            threading.Thread(target=load, args=(cls, stream))
            for cls in ("public", "internal", "restricted")
            for stream in (False, True)
        ]
        for w in workers:
            w.start()
        open_at_sigterm: list[int] = []
        try:
            for engine in pair:
                served = len(results)
                until(lambda s=served: len(results) > s + 12, "load running")
                up = next(u for u in r.app.pool.upstreams if u.label.endswith(f":{engine.port}"))
                # SIGTERM while the engine has a stream open that the router relays (the drain under test)
                until(lambda u=up: len(u.streams) >= 1, "a stream open on the engine")
                open_at_sigterm.append(len(up.streams))
                engine.drain()  # SIGTERM; returns once it has finished its open requests and exited
                time.sleep(0.3)  # down: connections refused
                engine.start(chunks=6, chunk_delay=0.05)
                until(lambda u=up: u.circuit.state == "closed" and u.healthy, "the engine back in the pool")
                count = len(engine.requests())
                until(lambda e=engine, c=count: len(e.requests()) > c + 3, "the restarted engine serving")
        finally:
            stop.set()
            for w in workers:
                w.join()
        failed = [x for x in results if x[1] not in ("local", "cloud")]
        assert failed == [] and len(results) > 50
        assert all(route == "local" for cls, route, _ in results if cls != "public")
        lines = r.audit_lines(at_least=len(results))
        assert len(lines) == len(results)
        assert [line for line in lines if line["status"] != 200 or line["error"]] == []
        assert all(line["route"] == "local" for line in lines if line["data_class"] != "public")
        # each drain began with streams open on the engine, and they ended whole (no result above failed);
        # whether a new request also met the draining or gone engine before its probe did depends on timing
        assert len(open_at_sigterm) == 2 and min(open_at_sigterm) >= 1


def test_an_engine_answering_that_it_shuts_down_leaves_the_pool_and_restricted_requests_wait(ups, cold, tmp_path):
    """A draining vLLM keeps /health at 200 and answers new requests 500 "cannot schedule new futures after
    shutdown" (measured with the pinned build, tests/vllm): that answer takes it out of the pool at once; data
    that may leave goes to the cloud, the rest waits for a ready engine (its replacement) instead of failing."""
    from inference.router.proxy import DRAINING_MESSAGES

    cloud = ups["cloud"]
    cold.start(mode="status", status=500, status_message=f"RuntimeError: {DRAINING_MESSAGES[0]}")
    with run_router(router_config([cold.url], cloud.url, tmp_path / "a.jsonl")) as r:
        t, out = in_thread(lambda: ask(r, "restricted"))
        until(lambda: r.app.pool.wait_queue.waiting == 1, "the restricted request waiting")
        assert ask(r, "public")[0] == "cloud"
        assert len(cold.client_requests()) == 1  # the draining engine got the first one only
        cold.kill()
        cold.start()  # the replacement, on the same address
        t.join()
        assert out["value"] == ("local", "answer from cold")
        lines = {line["data_class"]: line for line in r.audit_lines(at_least=2)}
        assert lines["restricted"]["failures"] == [f"127.0.0.1:{cold.port}:upstream_draining"]
        assert lines["restricted"]["queued_ms"] > 0 and lines["restricted"]["status"] == 200


def test_a_draining_engine_gets_no_new_requests_and_finishes_its_open_stream(ups, cold, tmp_path):
    """SIGTERM while it streams: its probe's 503 takes it out of the pool at once (busy is no excuse), its open
    stream ends whole, data that may leave goes to the cloud without trying it, the rest waits for it."""
    cloud = ups["cloud"]
    cold.start(chunks=20, chunk_delay=0.2)  # a 4 s stream; the probes run every 0.1 s
    with run_router(router_config([cold.url], cloud.url, tmp_path / "a.jsonl")) as r:
        up = r.app.pool.upstreams[0]
        long, long_out = in_thread(lambda: ask(r, "restricted", stream=True))
        # the engine has answered 200 and the router relays its stream (in_flight alone is set before the
        # engine has taken the request: a SIGTERM then gets a draining 503 and the request waits instead)
        until(lambda: len(up.streams) == 1, "the stream running")
        assert cold.proc is not None
        cold.proc.send_signal(signal.SIGTERM)
        until(lambda: not up.healthy, "the draining engine out of the pool")
        assert long.is_alive() and len(up.streams) == 1  # at once, while it still streams (busy is no excuse)
        assert ask(r, "public")[0] == "cloud"
        waiter, waiter_out = in_thread(lambda: ask(r, "internal"))
        until(lambda: r.app.pool.wait_queue.waiting == 1, "the internal request waiting")
        long.join()
        assert long_out.get("error") is None and long_out["value"][0] == "local"
        assert long_out["value"][1].endswith("part 19 ")  # whole
        cold.proc.wait(10)
        cold.start()
        waiter.join()
        assert waiter_out["value"] == ("local", "answer from cold")
        lines = {line["data_class"]: line for line in r.audit_lines(at_least=3)}
        assert lines["public"]["failures"] == []  # the draining engine was not tried
        assert lines["public"]["fallback_reason"] == "all_circuits_open"
        assert lines["internal"]["queued_ms"] > 0 and lines["restricted"]["status"] == 200


# ----------------------------------------------------------------------------- overflow by latency target
def _metrics(count: float, ttft_sum: float, waiting: float, running: float = 4.0) -> str:
    return (
        f'vllm:num_requests_waiting{{model_name="m"}} {waiting}\n'
        f'vllm:num_requests_running{{model_name="m"}} {running}\n'
        f'vllm:time_to_first_token_seconds_count{{model_name="m"}} {count}\n'
        f'vllm:time_to_first_token_seconds_sum{{model_name="m"}} {ttft_sum}\n'
        f'vllm:request_queue_time_seconds_sum{{model_name="m"}} 0\n'
    )


def test_ttft_estimate_from_vllm_metrics_and_the_routers_own_counts_with_hysteresis():
    est = TtftEstimator()
    est.observe(engine_sums(_metrics(100, 20.0, 0)), 10.0, 0)
    assert est.estimate(0) is None  # no speed shown yet
    est.observe(engine_sums(_metrics(110, 22.0, 20)), 11.0, 20)  # 10 started in 1 s, 0.2 s prefill each, 20 waiting
    assert est.estimate(20) == pytest.approx(0.2 + 20 / 10)
    assert est.estimate(30) == pytest.approx(0.2 + 30 / 10)  # 10 more sent by the router since the poll
    assert not est.over_target(3.0, 2.4, 20)
    assert est.over_target(3.0, 2.4, 30)  # 3.2 s: over
    assert est.over_target(3.0, 2.4, 26)  # 2.8 s: under the target but above 0.8 x: still over (hysteresis)
    assert not est.over_target(3.0, 2.4, 21)  # 2.3 s: back
    assert not est.over_target(3.0, 2.4, 26)  # 2.8 s from below: not over yet
    est.observe(engine_sums(_metrics(110, 22.0, 20)), 12.0, 20)  # nothing started while 20 wait: the rate halves
    assert est.estimate(20) == pytest.approx(0.2 + 20 / 5)
    est.observe(engine_sums(_metrics(5, 1.0, 0, 0)), 13.0, 0)  # restarted (counters began again): rates kept
    assert est.estimate(0) == pytest.approx(0.2)


def test_pick_spills_only_from_engines_over_the_target_and_restricted_data_still_queues_locally():
    config = parse_router_config(
        {
            "upstreams": [{"url": "http://127.0.0.1:1"}, {"url": "http://127.0.0.1:2"}],
            "saturation": {"max_waiting": None},
            "slo": {"ttft_s": 2.0},
        }
    )
    pool = UpstreamPool(config)
    slow, fast = pool.upstreams
    for up, waiting in ((slow, 40), (fast, 0)):
        up.latency.observe(engine_sums(_metrics(0, 0, 0)), 0.0, 0)
        up.latency.observe(engine_sums(_metrics(10, 1.0, waiting)), 1.0, 0)
    assert {pool.pick(allow_saturated=False)[0] for _ in range(4)} == {fast}  # the one under the target
    fast.latency.observe(engine_sums(_metrics(20, 2.0, 40)), 2.0, 0)
    assert pool.pick(allow_saturated=False) == (None, OVER_TTFT_TARGET)  # both over: the excess goes out
    up, _ = pool.pick(allow_saturated=True)  # data that may not leave queues on the least loaded
    assert up in (slow, fast)


def test_over_the_ttft_target_data_that_may_leave_goes_to_the_cloud_and_comes_back(ups, tmp_path):
    a, cloud = ups["a"], ups["cloud"]
    config = router_config(
        [a.url], cloud.url, tmp_path / "a.jsonl", saturation={"max_waiting": None}, slo={"ttft_s": 1.0}
    )  # the fixed threshold off: only the target decides
    with run_router(config) as r:
        up = r.app.pool.upstreams[0]
        for _ in range(6):  # the engine shows its speed
            assert ask(r, "public")[0] == "local"
        until(lambda: up.latency.start_rate is not None, "a speed from the metrics")
        a.control(waiting=50)  # a long queue: nothing starts soon
        until(lambda: (up.latency.estimate(up.in_flight) or 0) > 1.0, "the estimate over the target")
        assert ask(r, "public")[0] == "cloud"
        assert ask(r, "internal")[0] == "local"  # may not leave: it queues locally
        assert metric(r, "dsdeploy_router_upstream_ttft_estimate_seconds") > 1.0
        a.control(waiting=0)
        until(lambda: (up.latency.estimate(up.in_flight) or 0) < 0.8, "the estimate back under")
        assert ask(r, "public")[0] == "local"
        lines = r.audit_lines(at_least=9)
        spilled = [line for line in lines if line["route"] == "cloud"]
        assert [line["fallback_reason"] for line in spilled] == ["ttft_target"]
        assert metric(r, 'dsdeploy_router_fallbacks_total{reason="ttft_target"}') == 1
