"""Cloud spend budgets and rate limits, alone and shared by router replicas in a real redis-server."""

from __future__ import annotations

import hashlib
import math
import threading
import urllib.request
from datetime import UTC, datetime
from typing import Any

import openai
import pytest

from inference.router.budgets import BudgetGate, period_id, seconds_to_reset
from inference.router.config import parse_router_config
from inference.router.env_refs import RouterConfigError
from inference.router.shared_state import MAX_PENDING, LocalState, RedisState

from .harness import CLOUD_KEY, router_config, run_router, until
from .redis_server import PASSWORD, RedisServer
from .router_process import RouterProcess

# The fake cloud answers with usage 7 prompt + 3 completion tokens: 7 * 0.28 + 3 * 0.42 = 3.22 micro-USD at the
# default deepseek-chat prices, so a budget of 1 micro-USD is spent by one answer.
ONE_ANSWER_USD = (7 * 0.28 + 3 * 0.42) / 1e6
TINY = {"day_usd": 0.000001}
PUBLIC = {"X-Data-Class": "public"}
MESSAGES = [{"role": "user", "content": "hi"}]


def client(base: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=20, default_headers=PUBLIC)


def chat(base: str, **kw: Any) -> Any:
    return client(base).chat.completions.with_raw_response.create(model="fake-model", messages=MESSAGES, **kw)


def metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # the exposition sorts them
    head = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(head + " "):
            return float(line.split()[-1])
    return None


def cloud_only(redis: RedisServer | None, cloud_url: str = "http://127.0.0.1:9", **limits: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "upstreams": [],
        "cloud": {"base_url": cloud_url, "api_key": "${TEST_CLOUD_KEY}", "backoff_base_s": 0.05, "backoff_max_s": 0.5},
        "policy": {"default_class": "public"},
        "limits": limits,
    }
    if redis is not None:
        data["limits"] = {**limits, "redis_url": redis.url, "redis_password": "${TEST_REDIS_PASSWORD}"}
    return data


ENV = {"TEST_CLOUD_KEY": CLOUD_KEY, "TEST_REDIS_PASSWORD": PASSWORD}


def wait_saturated(app: Any, waiting: int) -> None:
    """Until the router's metrics poll has read the engine's queue (no fixed sleep)."""
    until(lambda: all(s["waiting"] >= waiting for s in app.upstream_states()), "the metrics poll", 10)


def test_two_router_processes_share_one_budget_in_redis(ups, redis_server, tmp_path):
    """Replica A spends the key's budget with a streamed cloud answer; replica B then refuses the cloud."""
    cfg = cloud_only(redis_server, ups["cloud"].url, budgets={"per_key": TINY})
    replicas = [RouterProcess(cfg, tmp_path, name, ENV) for name in ("a", "b")]
    try:
        for r in replicas:
            r.start()
        stream = client(replicas[0].url).chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
        assert [c for c in stream if c.choices and c.choices[0].delta.content]  # served by the cloud
        assert replicas[0].audit_lines(1)[0]["route"] == "cloud"
        spent = metric(
            replicas[0].metrics(), "dsdeploy_router_budget_remaining_usd", scope="key:anonymous", period="day"
        )
        assert spent is not None and spent < 0  # 1 micro-USD minus one streamed answer's cost
        with pytest.raises(openai.RateLimitError) as info:
            chat(replicas[1].url)
        assert info.value.body["code"] == "budget_exhausted"
        now = datetime.now(UTC)
        retry_after = int(info.value.response.headers["retry-after"])
        assert 0 < retry_after <= seconds_to_reset("day", now) + 1
        line = replicas[1].audit_lines(1)[0]
        assert (line["status"], line["error"], line["cloud_refused"], line["route"]) == (
            429,
            "budget_exhausted",
            "budget_exhausted",
            "local",
        )
        assert (
            metric(
                replicas[1].metrics(),
                "dsdeploy_router_budget_refused_total",
                reason="budget_exhausted",
                scope="key:anonymous",
                period="day",
            )
            == 1.0
        )
    finally:
        for r in replicas:
            r.stop()
    assert len(ups["cloud"].requests()) == 1  # the second replica never sent it
    stored = redis_server.keys_and_ttls()
    day = period_id("day", datetime.now(UTC))
    assert f"dsdeploy:budget:key:anonymous:day:{day}" in stored
    assert stored and all(ttl > 0 for ttl in stored.values())  # every key expires


# A request asking for up to 1000 tokens holds at least 1000 * 0.42 micro-USD as it leaves: more than this
# budget, which its answer (ONE_ANSWER_USD) does not spend.
HELD_BUDGET = {"day_usd": 0.0001}
BOUND = 1000


def spent_usd(metrics_text: str, scope: str = "total") -> float | None:
    return metric(metrics_text, "dsdeploy_router_budget_spent_usd", scope=scope, period="day")


def held_budget_config(cloud_url: str, tmp_path: Any) -> Any:
    """One router, cloud only, with HELD_BUDGET as its total budget."""
    return router_config(
        [],
        cloud_url,
        tmp_path / "audit.jsonl",
        policy={"default_class": "public"},
        limits={"budgets": {"total": HELD_BUDGET}},
    )


def in_thread_chat(base: str, out: dict[str, Any], **kw: Any) -> threading.Thread:
    def run() -> None:
        try:
            out["reply"] = chat(base, **kw)
        except openai.APIError as exc:
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t


def test_a_request_out_at_the_cloud_holds_its_estimated_cost_until_its_answer_settles_it(ups, tmp_path):
    """Checked while another request is out, a request sees that one's cost already: it is refused, where
    check-then-charge let every request in flight through; the answer's usage then settles the hold."""
    cloud = ups["cloud"]
    cloud.control(delay=1.5)
    with run_router(held_budget_config(cloud.url, tmp_path)) as r:
        first: dict[str, Any] = {}
        t = in_thread_chat(r.url, first, max_tokens=BOUND)
        until(lambda: len(cloud.requests()) == 1, "the first request at the cloud")
        with pytest.raises(openai.RateLimitError) as info:
            chat(r.url, max_tokens=BOUND)
        assert info.value.body["code"] == "budget_exhausted"
        t.join()
        assert first["reply"].headers["x-dsdeploy-route"] == "cloud"
        with urllib.request.urlopen(r.url + "/metrics") as resp:
            settled = spent_usd(resp.read().decode())
        assert settled == pytest.approx(ONE_ANSWER_USD, abs=1e-9)  # the hold became the answer's own cost
        cloud.control(delay=0.0)
        assert chat(r.url, max_tokens=BOUND).headers["x-dsdeploy-route"] == "cloud"  # room again
    assert len(cloud.requests()) == 2


def test_a_hold_is_refunded_when_the_cloud_never_answers(ups, tmp_path):
    cloud = ups["cloud"]
    cloud.control(mode="status", status=500)
    with run_router(held_budget_config(cloud.url, tmp_path)) as r:
        for _ in range(2):  # the second is let out: the first one's hold was given back
            with pytest.raises(openai.InternalServerError):
                chat(r.url, max_tokens=BOUND)
        with urllib.request.urlopen(r.url + "/metrics") as resp:
            assert spent_usd(resp.read().decode()) == 0.0
    assert len(cloud.requests()) >= 2


def test_a_request_without_max_tokens_holds_what_the_cloud_model_answers_at_most_without_one(ups, tmp_path):
    """No max_tokens: the hold is the prompt plus deepseek-chat's default output cap (4096 tokens, 1.7 milli-USD),
    so the next request is refused while it is out; holding the prompt alone (a few micro-USD) let it through."""
    cloud = ups["cloud"]
    cloud.control(delay=1.5)
    with run_router(held_budget_config(cloud.url, tmp_path)) as r:
        first: dict[str, Any] = {}
        t = in_thread_chat(r.url, first)
        until(lambda: len(cloud.requests()) == 1, "the first request at the cloud")
        with urllib.request.urlopen(r.url + "/metrics") as resp:
            held = spent_usd(resp.read().decode())
        with pytest.raises(openai.RateLimitError) as info:
            chat(r.url)
        t.join()
        with urllib.request.urlopen(r.url + "/metrics") as resp:
            settled = spent_usd(resp.read().decode())
    assert info.value.body["code"] == "budget_exhausted"
    assert held is not None and held >= 4096 * 0.42 / 1e6  # the default cap, at the output price
    assert first["reply"].headers["x-dsdeploy-route"] == "cloud"
    assert settled == pytest.approx(ONE_ANSWER_USD, abs=1e-9)  # then settled to what the answer cost


def test_a_hold_in_one_replica_is_seen_by_the_other_through_redis(ups, redis_server, tmp_path):
    cloud = ups["cloud"]
    cloud.control(delay=2.0)
    cfg = cloud_only(redis_server, cloud.url, budgets={"per_key": HELD_BUDGET})
    replicas = [RouterProcess(cfg, tmp_path, name, ENV) for name in ("a", "b")]
    try:
        for r in replicas:
            r.start()
        first: dict[str, Any] = {}
        t = in_thread_chat(replicas[0].url, first, max_tokens=BOUND)
        until(lambda: len(cloud.requests()) == 1, "replica a's request at the cloud")
        with pytest.raises(openai.RateLimitError) as info:
            chat(replicas[1].url, max_tokens=BOUND)
        assert info.value.body["code"] == "budget_exhausted"
        t.join()
        assert first["reply"].headers["x-dsdeploy-route"] == "cloud"
        settled = spent_usd(replicas[0].metrics(), "key:anonymous")
        assert settled == pytest.approx(ONE_ANSWER_USD, abs=1e-9)
    finally:
        for r in replicas:
            r.stop()
    day = period_id("day", datetime.now(UTC))
    stored = int(redis_server.client().get(f"dsdeploy:budget:key:anonymous:day:{day}"))
    assert abs(stored - ONE_ANSWER_USD * 1e9) <= 1  # nano-USD: held, then settled to the answer's cost


@pytest.mark.parametrize("shared", [False, True], ids=["one replica", "redis"])
def test_holds_after_checks_are_refused_once_the_budget_is_reached(redis_server, shared):
    """Ten requests pass ``check`` together (nothing spent yet); as they leave, check and hold are one step,
    so only the holds made below the limit get out (3 of 1000-token holds in a 0.001 USD budget)."""
    import asyncio

    cfg = parse_router_config(
        cloud_only(redis_server if shared else None, budgets={"total": {"day_usd": 0.001}}), environ=ENV
    )
    hold_nano = 1000 * 420  # 1000 completion tokens at 0.42 USD per million, in nano-USD

    async def scenario() -> tuple[list[Any], list[Any], list[int]]:
        state = RedisState(cfg.limits) if shared else LocalState()
        gate = BudgetGate(cfg, state)
        checks = await asyncio.gather(*(gate.check("anonymous") for _ in range(10)))
        holds = await asyncio.gather(*(gate.hold("anonymous", "deepseek-chat", 0, 1000) for _ in range(10)))
        day = period_id("day", datetime.now(UTC))
        stored = await state.spent([f"dsdeploy:budget:total:day:{day}"])
        await state.close()
        return checks, holds, stored

    checks, holds, stored = asyncio.run(scenario())
    assert checks == [None] * 10
    admitted = [nano for nano, refusal in holds if refusal is None]
    refused = [refusal for _, refusal in holds if refusal is not None]
    assert admitted == [hold_nano] * 3  # 0, 0.42 and 0.84 of the budget were below it; 1.26 is not
    assert [(r.status, r.code) for r in refused] == [(429, "budget_exhausted")] * 7
    assert stored == [3 * hold_nano]  # refused holds added nothing


def test_a_hold_fails_closed_when_redis_does_not_answer(redis_server):
    import asyncio

    cfg = parse_router_config(cloud_only(redis_server, budgets={"total": {"day_usd": 1.0}}), environ=ENV)

    async def scenario() -> tuple[int, Any]:
        state = RedisState(cfg.limits)
        redis_server.kill()
        held = await BudgetGate(cfg, state).hold("anonymous", "deepseek-chat", 10, 10)
        await state.close()
        return held

    nano, refusal = asyncio.run(scenario())
    assert nano == 0 and refusal is not None and (refusal.status, refusal.code) == (503, "budget_unavailable")


def total_day_counter() -> str:
    return f"dsdeploy:budget:total:day:{period_id('day', datetime.now(UTC))}"


def redis_router_config(ups: Any, redis: RedisServer, tmp_path: Any, **sections: Any) -> Any:
    """One router with engine a and the cloud stand-in, HELD_BUDGET as its total budget, kept in Redis."""
    return router_config(
        [ups["a"].url],
        ups["cloud"].url,
        tmp_path / "audit.jsonl",
        environ=ENV,
        policy={"default_class": "public"},
        limits={
            "budgets": {"total": HELD_BUDGET},
            "redis_url": redis.url,
            "redis_password": "${TEST_REDIS_PASSWORD}",
        },
        **sections,
    )


def spend_it_elsewhere(redis: RedisServer) -> None:
    """Another replica's spend: the whole HELD_BUDGET, added to the shared counter behind this router's back."""
    redis.client().incrby(total_day_counter(), round(HELD_BUDGET["day_usd"] * 1e9))


def test_a_budget_spent_elsewhere_while_local_attempts_ran_keeps_the_request_from_leaving(ups, redis_server, tmp_path):
    """Checked with room left, the request tries its engine, which fails slowly; meanwhile another replica
    spends the budget. As it is about to leave, the hold sees that: no cloud request, 429 budget_exhausted."""
    a, cloud = ups["a"], ups["cloud"]
    a.control(mode="status", status=500, delay=1.0)
    with run_router(redis_router_config(ups, redis_server, tmp_path, wait_queue={"deadline_s": 0.5})) as r:
        out: dict[str, Any] = {}
        t = in_thread_chat(r.url, out, max_tokens=10)
        until(lambda: len(a.requests()) >= 1, "the first local attempt")
        spend_it_elsewhere(redis_server)
        t.join()
        line = r.audit_lines(1)[0]
    assert isinstance(out.get("error"), openai.RateLimitError), out
    assert out["error"].body["code"] == "budget_exhausted"
    assert (line["status"], line["cloud_refused"]) == (429, "budget_exhausted")
    assert cloud.requests() == []


def test_a_stream_is_not_continued_from_the_cloud_once_the_budget_is_spent(ups, redis_server, tmp_path):
    """A public stream cut by its engine would be continued from the cloud; with the budget spent elsewhere
    while it streamed, the continuation's hold refuses it: the stream ends with its error, nothing leaves."""
    a, cloud = ups["a"], ups["cloud"]
    a.control(mode="cut_stream", chunks=8, cut_after=3, chunk_delay=0.3)
    cloud.control(foreign_prefix="continue")
    with run_router(redis_router_config(ups, redis_server, tmp_path)) as r:
        out: dict[str, Any] = {}

        def run() -> None:
            try:
                stream = client(r.url).chat.completions.create(
                    model="fake-model", messages=MESSAGES, stream=True, max_tokens=10
                )
                out["text"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            except openai.APIError as exc:
                out["error"] = exc

        t = threading.Thread(target=run)
        t.start()
        until(lambda: len(a.requests()) >= 1, "the stream on engine a")
        spend_it_elsewhere(redis_server)
        t.join()
        line = r.audit_lines(1)[0]
    assert isinstance(out.get("error"), openai.APIError), out
    assert (line["route"], line["error"], line["continuation"]) == ("local", "stream_interrupted", None)
    assert "cloud:budget_exhausted" in line["failures"] and line["cloud_refused"] == "budget_exhausted"
    assert cloud.requests() == []


def test_spent_budget_keeps_requests_home_even_on_a_saturated_engine(ups, tmp_path):
    """Without Redis (one replica): the first spill spends the total budget, later ones stay local."""
    ups["a"].control(waiting=20)
    cfg = router_config(
        [ups["a"].url],
        ups["cloud"].url,
        tmp_path / "audit.jsonl",
        saturation={"max_waiting": 8},
        limits={"budgets": {"total": TINY}},
    )
    with run_router(cfg) as r:
        wait_saturated(r.app, 20)
        assert chat(r.url).headers["x-dsdeploy-route"] == "cloud"
        assert chat(r.url).headers["x-dsdeploy-route"] == "local"
        lines = r.audit_lines(2)
    assert [(x["route"], x["cloud_refused"]) for x in lines] == [("cloud", None), ("local", "budget_exhausted")]
    assert len(ups["cloud"].requests()) == 1


def test_key_budget_is_per_key_and_overridable(ups, tmp_path):
    keys = {"rich": "sk-rich-0123456789", "poor": "sk-poor-0123456789"}
    entries = [{"id": name, "sha256": hashlib.sha256(k.encode()).hexdigest()} for name, k in keys.items()]
    entries[0]["budget"] = {"day_usd": 1.0}
    cfg = router_config(
        [],
        ups["cloud"].url,
        tmp_path / "audit.jsonl",
        policy={"default_class": "public"},
        auth={"keys": entries},
        limits={"budgets": {"per_key": TINY}},
    )
    with run_router(cfg) as r:
        for _ in range(2):
            client(r.url, keys["rich"]).chat.completions.create(model="m", messages=MESSAGES)
        client(r.url, keys["poor"]).chat.completions.create(model="m", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as info:
            client(r.url, keys["poor"]).chat.completions.create(model="m", messages=MESSAGES)
        assert info.value.body["code"] == "budget_exhausted"
        client(r.url, keys["rich"]).chat.completions.create(model="m", messages=MESSAGES)


def test_rate_limit_is_shared_by_replicas_in_redis(ups, redis_server, tmp_path):
    cfg = cloud_only(redis_server, ups["cloud"].url, rpm_per_key=2)
    configs = [
        parse_router_config({**cfg, "audit": {"path": str(tmp_path / f"{n}.jsonl")}}, environ=ENV) for n in ("a", "b")
    ]
    with run_router(configs[0]) as a, run_router(configs[1]) as b:
        chat(a.url)
        chat(a.url)
        with pytest.raises(openai.RateLimitError) as info:
            chat(b.url)  # counted alone, replica b would allow it
        assert info.value.body["code"] == "rate_limit_exceeded"
    assert all(ttl > 0 for ttl in redis_server.keys_and_ttls().values())


def test_redis_killed_mid_run_fails_closed_for_budgets(ups, redis_server, tmp_path):
    ups["a"].control(waiting=20)
    cfg = router_config(
        [ups["a"].url],
        ups["cloud"].url,
        tmp_path / "audit.jsonl",
        environ=ENV,
        saturation={"max_waiting": 8},
        # with no engine ready a request that cannot leave waits for one (wait_queue), then
        # gets the budget's refusal: a short wait keeps the test short
        wait_queue={"deadline_s": 0.5},
        limits={
            "budgets": {"total": {"day_usd": 100.0}},
            "rpm_per_key": 3,
            "redis_url": redis_server.url,
            "redis_password": "${TEST_REDIS_PASSWORD}",
        },
    )
    with run_router(cfg) as r:
        wait_saturated(r.app, 20)
        assert chat(r.url).headers["x-dsdeploy-route"] == "cloud"
        before = r.app.metrics.render().decode()
        assert metric(before, "dsdeploy_router_shared_state_up") == 1.0
        redis_server.kill()
        assert chat(r.url).headers["x-dsdeploy-route"] == "local"  # no spend that cannot be counted
        ups["a"].kill()
        with pytest.raises(openai.InternalServerError) as info:
            chat(r.url)
        assert info.value.status_code == 503 and info.value.body["code"] == "budget_unavailable"
        assert info.value.response.headers["retry-after"]
        # rate limits go on, counted by this replica alone: its own fresh bucket of 3
        with pytest.raises(openai.InternalServerError):
            chat(r.url)
        with pytest.raises(openai.RateLimitError):
            chat(r.url)
        text = r.app.metrics.render().decode()
        lines = r.audit_lines(5)

    assert metric(text, "dsdeploy_router_shared_state_up") == 0.0
    errors = [
        metric(text, "dsdeploy_router_shared_state_errors_total", operation=op) for op in ("rate", "spent", "charge")
    ]
    assert sum(e or 0 for e in errors) >= 1
    assert metric(text, "dsdeploy_router_rate_limit_local_decisions_total") == 4.0
    assert (
        metric(text, "dsdeploy_router_budget_refused_total", reason="budget_unavailable", scope="*", period="*") or 0
    ) >= 3
    assert [x["cloud_refused"] for x in lines[1:4]] == ["budget_unavailable"] * 3
    assert len(ups["cloud"].requests()) == 1


def test_charges_made_while_redis_is_down_are_held_and_added_later(redis_server, tmp_path):
    import asyncio

    now = [0.0]
    cfg = parse_router_config(cloud_only(redis_server), environ=ENV)
    limits = cfg.limits.model_copy(update={"redis_retry_s": 5.0})

    async def scenario() -> tuple[list[int], int, int]:
        state = RedisState(limits, clock=lambda: now[0])
        redis_server.kill()
        await state.charge([("t:x", 7, 100)])
        await state.charge([("t:x", 5, 100), ("t:y", 1, 100)])
        held = len(state.pending)
        redis_server.start()
        now[0] = 10.0  # past redis_retry_s
        values = await state.spent(["t:x", "t:y"])
        left = len(state.pending)
        for i in range(MAX_PENDING + 10):  # hostile: more counters than the bound while Redis is away
            state._failed("charge")
            await state.charge([(f"t:many:{i}", 1, 100)])
        assert len(state.pending) <= MAX_PENDING and state.pending_dropped >= 10
        await state.close()
        return values, held, left

    values, held, left = asyncio.run(scenario())
    assert (values, held, left) == ([12, 1], 2, 0)
    assert all(ttl > 0 for ttl in redis_server.keys_and_ttls().values())


def test_concurrent_charges_are_counted_once_each(redis_server):
    import asyncio

    cfg = parse_router_config(cloud_only(redis_server), environ=ENV)

    async def scenario() -> list[int]:
        state = RedisState(cfg.limits)
        await asyncio.gather(*(state.charge([("t:total", 3, 100), (f"t:key:{i % 4}", 1, 100)]) for i in range(200)))
        values = await state.spent(["t:total", "t:key:0", "t:key:3"])
        await state.close()
        return values

    assert asyncio.run(scenario()) == [600, 50, 50]


def test_unknown_keys_store_nothing_in_redis(ups, redis_server, tmp_path):
    key = "sk-known-0123456789"
    cfg = router_config(
        [],
        ups["cloud"].url,
        tmp_path / "audit.jsonl",
        environ=ENV,
        policy={"default_class": "public"},
        auth={"keys_sha256": [hashlib.sha256(key.encode()).hexdigest()]},
        limits={
            "rpm_per_key": 100,
            "budgets": {"per_key": {"day_usd": 1.0}},
            "redis_url": redis_server.url,
            "redis_password": "${TEST_REDIS_PASSWORD}",
        },
    )
    with run_router(cfg) as r:
        for i in range(40):
            with pytest.raises(openai.AuthenticationError):
                client(r.url, f"sk-hostile-{i}").chat.completions.create(model="m", messages=MESSAGES)
        assert redis_server.keys_and_ttls() == {}
        client(r.url, key).chat.completions.create(model="m", messages=MESSAGES)
    stored = redis_server.keys_and_ttls()
    assert len(stored) == 2 and all(ttl > 0 for ttl in stored.values())  # its bucket and its day counter


def test_budget_periods_reset_at_utc_day_and_month():
    dec = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)
    assert seconds_to_reset("day", dec) == 30.0 and seconds_to_reset("month", dec) == 30.0
    mid = datetime(2026, 2, 10, 12, 0, 0, tzinfo=UTC)
    assert seconds_to_reset("day", mid) == 12 * 3600
    assert seconds_to_reset("month", mid) == (18 * 24 + 12) * 3600
    assert (period_id("day", mid), period_id("month", mid)) == ("20260210", "202602")


def test_month_budget_gives_retry_after_until_the_next_month():
    import asyncio

    cfg = parse_router_config(
        {"cloud": {"api_key": "${K}"}, "limits": {"budgets": {"total": {"month_usd": 0}}}}, environ={"K": "x"}
    )
    at = datetime(2026, 2, 27, 0, 0, 0, tzinfo=UTC).timestamp()
    refusal = asyncio.run(BudgetGate(cfg, LocalState(), clock=lambda: at).check("anonymous"))
    assert refusal is not None and refusal.status == 429 and refusal.retry_after == 2 * 86400
    assert "total per month (0 USD)" in refusal.message


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"budgets": {"per_key": {"day_usd": -1}}}, "limits.budgets.per_key.day_usd"),
        ({"budgets": {"total": {"month_usd": "lots"}}}, "limits.budgets.total.month_usd"),
        ({"budgets": {"total": {"weekly_usd": 1}}}, "limits.budgets.total.weekly_usd"),
        ({"redis_url": "http://redis:6379"}, "limits.redis_url: Value error, must be redis://"),
        ({"redis_url": "redis://user:hunter2@redis:6379"}, "credentials in the URL"),
        ({"redis_url": "redis://redis:6379/zero"}, "database number"),
        ({"redis_password": "hunter2"}, "limits.redis_password: must be an environment reference"),
        ({"redis_timeout_s": 0}, "limits.redis_timeout_s"),
    ],
)
def test_bad_limits_config_names_the_field(limits, message):
    with pytest.raises(RouterConfigError) as info:
        parse_router_config({"cloud": {"api_key": "${K}"}, "limits": limits}, environ={"K": "x"})
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)


def test_budget_needs_a_price_for_every_cloud_model():
    with pytest.raises(RouterConfigError, match=r"\['deepseek-v9'\] have no entry in cloud.prices"):
        parse_router_config(
            {
                "cloud": {"api_key": "${K}", "models": {"*": "deepseek-v9"}},
                "limits": {"budgets": {"total": {"day_usd": 1}}},
            },
            environ={"K": "x"},
        )


def test_rediss_url_turns_on_tls():
    cfg = parse_router_config(
        {
            "cloud": {"api_key": "${K}"},
            "limits": {"redis_url": "rediss://redis.example:6380/1", "redis_password": "${P}"},
        },
        environ={"K": "x", "P": "pw"},
    )
    state = RedisState(cfg.limits)
    kwargs = state.client.connection_pool.connection_kwargs
    assert state.client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("redis.example", 6380, 1, "pw")
    assert TINY["day_usd"] < ONE_ANSWER_USD


@pytest.fixture()
def tls_ca() -> Any:
    import trustme

    return trustme.CA()


def tls_limits(server: RedisServer, ca_file: Any = None) -> Any:
    """The parsed limits of a router that keeps a total budget in ``server`` over rediss://."""
    limits: dict[str, Any] = {"budgets": {"total": {"day_usd": 1.0}}}
    if ca_file is not None:
        limits["redis_tls_ca_file"] = str(ca_file)
    return parse_router_config(cloud_only(server, **limits), environ=ENV)


def spend_over(cfg: Any) -> tuple[list[Any], Any]:
    """Check, hold and settle one request's budget through RedisState over TLS; the counters as read back."""
    import asyncio

    async def scenario() -> tuple[list[Any], Any]:
        state = RedisState(cfg.limits)
        gate = BudgetGate(cfg, state)
        try:
            checked = await gate.check("anonymous")
            nano, refusal = await gate.hold("anonymous", "deepseek-chat", 1000, 1000)
            await gate.charge("anonymous", "deepseek-chat", 10, 10, held=nano)
            waited = await state.rate("anonymous", 60)
            return [checked, refusal, waited], dict(state.errors)
        finally:
            await state.close()

    return asyncio.run(scenario())


def test_budgets_and_rate_limits_over_tls_to_a_redis_with_a_private_ca(tmp_path, tls_ca):
    """A real redis-server that speaks TLS only, its certificate from a CA of the test's own (as cert-manager
    issues in a cluster): with limits.redis_tls_ca_file the router checks, holds, settles and rate-limits there."""
    server = RedisServer(tmp_path, tls=tls_ca)
    server.start()
    try:
        outcomes, errors = spend_over(tls_limits(server, server.ca_file))
        stored = int(server.client().get(total_day_counter()))
    finally:
        server.kill()
    assert outcomes == [None, None, None] and errors == {}
    assert stored == math.ceil((10 * 0.28 + 10 * 0.42) / 1e6 * 1e9)  # the settled cost, nano-USD


@pytest.mark.parametrize("case", ["no CA file", "certificate for another name"])
def test_a_redis_whose_certificate_cannot_be_verified_is_not_used(tmp_path, tls_ca, case):
    """Without the CA (the system store does not know it) or with a certificate for another host name, the
    connection is refused: budgets fail closed (503 budget_unavailable), nothing is sent in the clear."""
    other = case == "certificate for another name"
    server = RedisServer(tmp_path, tls=tls_ca, tls_name="redis.elsewhere.example" if other else "127.0.0.1")
    server.start()
    try:
        outcomes, errors = spend_over(tls_limits(server, server.ca_file if other else None))
        stored = server.client().get(total_day_counter())
    finally:
        server.kill()
    checked = outcomes[0]
    assert checked is not None and (checked.status, checked.code) == (503, "budget_unavailable")
    assert errors.get("spent", 0) >= 1 and stored is None


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"redis_url": "redis://r:6379/0", "redis_tls_ca_file": "CA"}, "limits.redis_tls_ca_file is set but"),
        ({"redis_url": "rediss://r:6379/0", "redis_tls_ca_file": "ca.pem"}, "must be an absolute path"),
        ({"redis_url": "rediss://r:6379/0", "redis_tls_ca_file": "/nonexistent/ca.pem"}, "is not a readable file"),
    ],
)
def test_bad_tls_ca_file_names_the_field(limits, message, tmp_path):
    if limits["redis_tls_ca_file"] == "CA":
        (tmp_path / "ca.pem").write_text("")
        limits = {**limits, "redis_tls_ca_file": str(tmp_path / "ca.pem")}
    with pytest.raises(RouterConfigError) as info:
        parse_router_config({"cloud": {"api_key": "${K}"}, "limits": limits}, environ={"K": "x"})
    assert "redis_tls_ca_file" in str(info.value) and message in str(info.value)


def test_bad_default_max_tokens_names_the_field():
    with pytest.raises(RouterConfigError, match=r"cloud\.default_max_tokens\.deepseek-chat"):
        parse_router_config(
            {"cloud": {"api_key": "${K}", "default_max_tokens": {"deepseek-chat": 0}}}, environ={"K": "x"}
        )
