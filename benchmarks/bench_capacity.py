"""The router as hybrid capacity manager, side by side: a scripted day against one loopback engine whose time
to first token grows with its queue, and a loopback cloud, through the same router configured two ways:

- **dsdeploy**: the router's defaults plus a time-to-first-token target (``slo.ttft_s``) and the cold-start
  wait queue (on by default);
- **errors only**: the same router falling back only on errors and timeouts (no saturation threshold, no
  target, no wait queue), as peer gateways do (LiteLLM's fallbacks, for one, fire on a failed call).

The day: the engine is cold for its first seconds (scaled to zero, loading), then a load curve with a peak
about 2.5x what the engine can serve, over three data classes: public and internal may leave, restricted may
not. Reported per configuration: the share of tokens served locally, the cloud spend (DeepSeek's list prices
from ``infra/decision/api_prices.yaml``), p95 time to first token per class, restricted requests queued and
refused; then the ratios. Everything on 127.0.0.1 (three processes: engine, cloud, router; the load in this
one). About 2 minutes on 2 cores. It prints figures; it asserts nothing.

    .venv/bin/python benchmarks/bench_capacity.py [--day-s 40] [--ttft-s 1.0] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import free_port, serve_asgi, wait_port  # benchmarks/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]
CLOUD_KEY = "bench-cloud-key-0123456789"
CLASSES = (("public", 0.5), ("internal", 0.3), ("restricted", 0.2))
MAX_TOKENS = 48
CHUNK_TOKENS = 8  # tokens per stream event
PROMPT = "Summarise the quarterly figures of the northern region in three sentences, with the totals. " * 2

# The loopback engine: SLOTS sequences at once; the rest wait (its time to first token grows with the queue).
SLOTS = 4
PREFILL_TOK_S = 4000.0
DECODE_TOK_S = 60.0  # per sequence
COLD_S = 6.0  # the engine listens only this long after the day began (the model loading)
# The loopback cloud: no queue, a fixed first-token time and the same decode speed.
CLOUD_TTFT_S = 0.6


# ---------------------------------------------------------------------------- the loopback servers
def serve(role: str, port: int, ready_after: float) -> None:
    """An OpenAI-protocol engine (``engine``) or cloud (``cloud``), exporting vLLM's metric names."""

    time.sleep(ready_after)  # cold: nothing listens yet
    slots = asyncio.Semaphore(SLOTS) if role == "engine" else None
    stats = {"waiting": 0, "running": 0, "ttft_count": 0, "ttft_sum": 0.0, "queue_sum": 0.0}

    async def app(scope, receive, send):  # noqa: ANN001 (raw ASGI)
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path == "/metrics":
            text = "".join(
                f'vllm:{name}{{model_name="bench"}} {stats[key]}\n'
                for name, key in (
                    ("num_requests_waiting", "waiting"),
                    ("num_requests_running", "running"),
                    ("time_to_first_token_seconds_count", "ttft_count"),
                    ("time_to_first_token_seconds_sum", "ttft_sum"),
                    ("request_queue_time_seconds_sum", "queue_sum"),
                )
            )
            return await whole(send, 200, text.encode(), b"text/plain")
        if path in ("/health", "/v1/models"):
            return await whole(send, 200, b'{"object":"list","data":[{"id":"bench"}]}')
        data = json.loads(body)
        prompt_tokens = max(1, len(json.dumps(data.get("messages"))) // 4)
        tokens = min(int(data.get("max_tokens") or MAX_TOKENS), MAX_TOKENS)
        model = data.get("model", "bench")
        start = time.monotonic()
        stats["waiting"] += 1
        if slots is not None:
            await slots.acquire()
        stats["waiting"] -= 1
        stats["running"] += 1
        try:
            queued = time.monotonic() - start
            await asyncio.sleep(prompt_tokens / PREFILL_TOK_S if slots is not None else CLOUD_TTFT_S)
            stats["ttft_count"] += 1
            stats["ttft_sum"] += time.monotonic() - start
            stats["queue_sum"] += queued
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": tokens,
                "total_tokens": prompt_tokens + tokens,
            }
            if not data.get("stream"):
                await asyncio.sleep(tokens / DECODE_TOK_S)
                return await whole(
                    send,
                    200,
                    json.dumps(
                        {
                            "id": "b",
                            "object": "chat.completion",
                            "created": 0,
                            "model": model,
                            "usage": usage,
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "x " * tokens},
                                }
                            ],
                        }
                    ).encode(),
                )
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
            )
            for i in range(0, tokens, CHUNK_TOKENS):
                if i:
                    await asyncio.sleep(CHUNK_TOKENS / DECODE_TOK_S)
                delta = {"content": "x " * CHUNK_TOKENS, **({"role": "assistant"} if i == 0 else {})}
                await event(
                    send,
                    {
                        "id": "b",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                    },
                )
            await event(
                send,
                {
                    "id": "b",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                },
            )
            await event(
                send,
                {
                    "id": "b",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                },
            )
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        finally:
            stats["running"] -= 1
            if slots is not None:
                slots.release()

    async def whole(send, status: int, body: bytes, ctype: bytes = b"application/json") -> None:  # noqa: ANN001
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
        await send({"type": "http.response.body", "body": body})

    async def event(send, payload: dict) -> None:  # noqa: ANN001
        await send(
            {
                "type": "http.response.body",
                "body": b"data: " + json.dumps(payload).encode() + b"\n\n",
                "more_body": True,
            }
        )

    serve_asgi(app, port)


# ---------------------------------------------------------------------------- processes
def start_server(role: str, ready_after: float = 0.0, port: int | None = None) -> tuple[subprocess.Popen, int]:
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", role, "--port", str(port), "--ready-after", str(ready_after)], cwd=ROOT
    )
    return proc, port


def router_config(name: str, engine: int, cloud: int, ttft_s: float, audit: Path) -> dict:
    config: dict = {
        "upstreams": [{"url": f"http://127.0.0.1:{engine}", "name": "engine"}],
        "cloud": {"base_url": f"http://127.0.0.1:{cloud}", "api_key": "${BENCH_CLOUD_KEY}"},
        "policy": {"default_class": "internal", "cloud_allowed": ["public", "internal"]},
        "audit": {"path": str(audit)},
    }
    if name == "dsdeploy":
        config["slo"] = {"ttft_s": ttft_s}
    else:  # errors only: no saturation threshold, no latency target, no wait queue
        config["saturation"] = {"max_waiting": None}
        config["wait_queue"] = {"enabled": False}
    return config


# ---------------------------------------------------------------------------- the day
def schedule(day_s: float, seed: int = 15) -> list[tuple[float, str]]:
    """Arrival times and classes: a base load and a peak (Poisson, by thinning), the same for both runs."""
    rng = random.Random(seed)

    def rate(t: float) -> float:
        return 2.5 + 9.5 * math.exp(-(((t - 0.55 * day_s) / (0.15 * day_s)) ** 2))

    out, t, top = [], 0.0, 12.0
    bounds = [(c, sum(share for _, share in CLASSES[: i + 1])) for i, (c, _) in enumerate(CLASSES)]
    while True:
        t += rng.expovariate(top)
        if t >= day_s:
            return out
        if rng.random() < rate(t) / top:
            r = rng.random()
            out.append((t, next((c for c, upto in bounds if r < upto), CLASSES[-1][0])))


@dataclass
class Outcome:
    cls: str
    status: int
    route: str
    ttft_s: float | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class RunResult:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    queued: dict[str, float] = field(default_factory=dict)
    busy: list[tuple[float, float]] = field(default_factory=list)  # (time in the day, engine slots running)


async def one_request(session, url: str, cls: str) -> Outcome:  # noqa: ANN001
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.monotonic()
    try:
        async with session.post(url, json=body, headers={"X-Data-Class": cls}) as resp:
            route = resp.headers.get("x-dsdeploy-route", "?")
            if resp.status != 200:
                await resp.read()
                return Outcome(cls, resp.status, route, None)
            ttft, usage = None, {}
            async for line in resp.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                payload = json.loads(line[6:])
                if ttft is None and payload.get("choices"):
                    ttft = time.monotonic() - started
                usage = payload.get("usage") or usage
            return Outcome(cls, 200, route, ttft, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
    except Exception as exc:  # noqa: BLE001 (counted as a failure)
        return Outcome(cls, 0, f"error {type(exc).__name__}", None)


async def sample_engine(session, port: int, t0: float, busy: list[tuple[float, float]]) -> None:  # noqa: ANN001
    """The engine's running sequences every 0.25 s (0 while it is cold): is local capacity kept full?"""
    while True:
        running = 0.0
        try:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                for line in (await resp.text()).splitlines():
                    if line.startswith("vllm:num_requests_running"):
                        running = float(line.split()[-1])
        except Exception:  # noqa: BLE001 (cold: nothing listens yet)
            pass
        busy.append((time.monotonic() - t0, running))
        await asyncio.sleep(0.25)


async def drive(
    router_port: int, engine_port: int, plan: list[tuple[float, str]], busy: list[tuple[float, float]]
) -> list[Outcome]:
    import aiohttp

    url = f"http://127.0.0.1:{router_port}/v1/chat/completions"
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=120), connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        t0 = time.monotonic()
        sampler = asyncio.ensure_future(sample_engine(session, engine_port, t0, busy))
        tasks = []
        for at, cls in plan:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one_request(session, url, cls)))
        outcomes = list(await asyncio.gather(*tasks))
        sampler.cancel()
        return outcomes


def metric_values(port: int, name: str) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {line.split()[0]: float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)}


def run(name: str, cloud_port: int, plan: list[tuple[float, str]], ttft_s: float, tmp: Path) -> RunResult:
    import yaml

    engine_port = free_port()  # the engine starts with the day: cold for COLD_S
    router_port = free_port()
    config_path = tmp / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(router_config(name, engine_port, cloud_port, ttft_s, tmp / f"{name}.jsonl")))
    router = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inference.router",
            "--config",
            str(config_path),
            "--port",
            str(router_port),
            "--log-level",
            "error",
        ],
        cwd=ROOT,
        env={**os.environ, "BENCH_CLOUD_KEY": CLOUD_KEY},
        stdout=subprocess.DEVNULL,
    )
    engine = None
    try:
        wait_port(router_port)
        engine, _ = start_server("engine", ready_after=COLD_S, port=engine_port)
        busy: list[tuple[float, float]] = []
        outcomes = asyncio.run(drive(router_port, engine_port, plan, busy))
        queued = metric_values(router_port, "dsdeploy_router_wait_queue_total")
        return RunResult(name, outcomes, queued, busy)
    finally:
        for proc in (router, engine):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


# ---------------------------------------------------------------------------- report
def p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def summarise(result: RunResult, prices: tuple[float, float], day_s: float) -> dict:
    ok = [o for o in result.outcomes if o.status == 200]
    tokens = sum(o.prompt_tokens + o.completion_tokens for o in ok)
    local = sum(o.prompt_tokens + o.completion_tokens for o in ok if o.route == "local")
    cloud = [o for o in ok if o.route == "cloud"]
    spend = sum(o.prompt_tokens * prices[0] + o.completion_tokens * prices[1] for o in cloud) / 1e6
    restricted = [o for o in result.outcomes if o.cls == "restricted"]
    out = {
        "requests": len(result.outcomes),
        "failed": len(result.outcomes) - len(ok),
        "local_token_share": local / tokens if tokens else 0.0,
        "cloud_requests": len(cloud),
        "cloud_spend_usd": spend,
        "restricted_total": len(restricted),
        "restricted_queued": int(sum(v for k, v in result.queued.items() if 'outcome="full"' not in k)),
        "restricted_refused": sum(1 for o in restricted if o.status != 200),
        "restricted_left": sum(1 for o in restricted if o.route == "cloud"),
        # mean engine slots busy (of SLOTS) in the peak (the middle 30% of the day) and once it was warm
        "engine_busy_peak": _mean([r for t, r in result.busy if 0.4 * day_s <= t <= 0.7 * day_s]) / SLOTS,
        "engine_busy_warm": _mean([r for t, r in result.busy if COLD_S + 1 <= t <= day_s]) / SLOTS,
    }
    for cls, _ in CLASSES:
        out[f"p95_ttft_s_{cls}"] = p95([o.ttft_s for o in ok if o.cls == cls and o.ttft_s is not None])
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def show(rows: dict[str, dict]) -> None:
    names = list(rows)
    keys = list(rows[names[0]])
    print(f"{'':28}" + "".join(f"{n:>16}" for n in names))
    for key in keys:
        cells = []
        for n in names:
            v = rows[n][key]
            cells.append(f"{'-':>16}" if v is None else f"{v:>16.4g}" if isinstance(v, float) else f"{v:>16}")
        print(f"{key:28}" + "".join(cells))
    a, b = rows["dsdeploy"], rows["errors only"]

    def ratio(key: str) -> str:
        x, y = a[key], b[key]
        return "-" if x is None or y is None or y == 0 else f"{x / y:.2f}"

    print("\nratios, dsdeploy / errors only:")
    for key in ("local_token_share", "cloud_spend_usd", "engine_busy_peak", *(f"p95_ttft_s_{c}" for c, _ in CLASSES)):
        print(f"  {key:26} {ratio(key)}")
    print(
        f"  restricted refused: {a['restricted_refused']} vs {b['restricted_refused']}; "
        f"failed requests: {a['failed']} vs {b['failed']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--day-s", type=float, default=40.0, help="length of the scripted day (seconds)")
    parser.add_argument("--ttft-s", type=float, default=1.0, help="slo.ttft_s of the dsdeploy configuration")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--serve", choices=["engine", "cloud"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready-after", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.ready_after)
        return
    sys.path.insert(0, str(ROOT))
    from infra.decision.prices import load_api_prices

    _, price = load_api_prices("deepseek").model_prices("deepseek-chat")
    assert price.currency == "USD"
    prices = (price.input_cache_miss_per_mtok, price.output_per_mtok)
    plan = schedule(args.day_s)
    capacity = SLOTS / (len(PROMPT) / 4 / PREFILL_TOK_S + MAX_TOKENS / DECODE_TOK_S)
    print(
        f"scripted day: {args.day_s:g} s, {len(plan)} requests ({', '.join(f'{c} {s:.0%}' for c, s in CLASSES)}), "
        f"peak 12 req/s, engine capacity ~{capacity:.1f} req/s, cold for the first {COLD_S:g} s; "
        f"cloud priced at deepseek-chat USD {prices[0]}/{prices[1]} per M input/output tokens"
    )
    cloud, cloud_port = start_server("cloud")
    rows: dict[str, dict] = {}
    try:
        wait_port(cloud_port)
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("dsdeploy", "errors only"):
                started = time.monotonic()
                rows[name] = summarise(run(name, cloud_port, plan, args.ttft_s, Path(tmp)), prices, args.day_s)
                print(f"  {name}: done in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        cloud.terminate()
        cloud.wait(10)
    show(rows)
    if args.json:
        args.json.write_text(
            json.dumps({"day_s": args.day_s, "ttft_s": args.ttft_s, "requests": len(plan), "results": rows}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
