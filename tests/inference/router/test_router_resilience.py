"""Nothing lost: an upstream killed and restarted under load, and one frozen (SIGSTOP) while loaded."""

from __future__ import annotations

import asyncio
import time

import openai

from .harness import router_config, run_router

MSG = [{"role": "user", "content": "hi"}]


async def _load(url: str, total: int, concurrency: int, on_progress, stream_every: int = 0) -> list[tuple]:
    """Send ``total`` requests, ``concurrency`` at a time; return (ok, route, seconds) per request."""
    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
    sem = asyncio.Semaphore(concurrency)
    done = 0
    results: list[tuple] = []

    async def one(i: int) -> None:
        nonlocal done
        async with sem:
            started = time.monotonic()
            stream = bool(stream_every) and i % stream_every == 0
            try:
                if stream:
                    out = await client.chat.completions.create(model="fake-model", messages=MSG, stream=True)
                    text = "".join([c.choices[0].delta.content or "" async for c in out if c.choices])
                    headers = out.response.headers
                else:
                    raw = await client.chat.completions.with_raw_response.create(model="fake-model", messages=MSG)
                    text = raw.parse().choices[0].message.content
                    headers = raw.headers
                results.append(
                    (text.startswith("answer from"), headers["x-dsdeploy-route"], time.monotonic() - started)
                )
            except openai.APIError as exc:
                results.append((False, repr(exc), time.monotonic() - started))
            done += 1
            on_progress(done)

    await asyncio.gather(*(one(i) for i in range(total)))
    await client.close()
    return results


def test_zero_lost_while_an_upstream_dies_and_comes_back(ups, tmp_path):
    a, b = ups["a"], ups["b"]
    for p in (a, b):
        p.control(delay=0.02, chunks=3)
    cfg = router_config([a.url, b.url], ups["cloud"].url, tmp_path / "audit.jsonl")
    events: dict[str, float] = {}

    def progress(done: int) -> None:
        if done == 60:
            a.kill()
            events["killed"] = time.time()
        elif done == 150:
            a.start()
            a.control(delay=0.02, chunks=3)
            events["restarted"] = time.time()

    with run_router(cfg) as r:
        results = asyncio.run(_load(r.v1, 300, 16, progress, stream_every=5))
        lines = r.audit_lines(at_least=300)
    lost = [res for res in results if not res[0]]
    assert lost == [] and len(results) == 300
    assert {res[1] for res in results} == {"local"}  # internal data: never the cloud
    assert ups["cloud"].requests() == []
    assert all(line["status"] == 200 for line in lines)
    failures = [f for line in lines for f in line["failures"]]
    assert any(f.startswith(f"127.0.0.1:{a.port}:") for f in failures)  # the death was seen...
    served_by_a_after = [
        line
        for line in lines
        if line["upstream"] == f"127.0.0.1:{a.port}"
        and line["time"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(events["restarted"]))
    ]
    assert served_by_a_after  # ...and the restarted upstream took traffic again


def test_frozen_upstream_is_detected_and_its_waiting_requests_retried(ups, tmp_path):
    a, b = ups["a"], ups["b"]
    a.control(delay=1.0)
    cfg = router_config([a.url, b.url], None, tmp_path / "audit.jsonl", timeouts={"response_s": 60, "first_byte_s": 60})
    frozen_at: list[float] = []

    def progress(done: int) -> None:
        pass

    async def scenario(url: str) -> list[tuple]:
        load = asyncio.ensure_future(_load(url, 12, 12, progress, stream_every=2))
        await asyncio.sleep(0.3)  # requests are now in flight on both upstreams
        a.freeze()
        frozen_at.append(time.monotonic())
        return await load

    try:
        with run_router(cfg) as r:
            results = asyncio.run(scenario(r.v1))
            lines = r.audit_lines(at_least=12)
            assert r.app.pool.upstreams[0].circuit.state == "open"
    finally:
        a.thaw()
    assert [res for res in results if not res[0]] == []
    unresponsive = [line for line in lines if f"127.0.0.1:{a.port}:unresponsive" in line["failures"]]
    assert unresponsive, "the frozen upstream's requests were not retried"
    assert all(line["upstream"] == f"127.0.0.1:{b.port}" for line in unresponsive)
    # Found by the probes (interval 0.1 s + timeout 0.5 s), far before the 60 s request timeouts.
    assert max(res[2] for res in results) < 10
