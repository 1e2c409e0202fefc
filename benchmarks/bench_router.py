"""Router overhead, side by side: a fixed-answer upstream reached directly, through the dsdeploy router,
and through the LiteLLM proxy (one worker each), at concurrency 1 and 32; plus the time from a local
upstream's death (SIGKILL, and SIGSTOP) to the first request served by the cloud.

    .venv/bin/python benchmarks/bench_router.py [--seconds 5] [--skip-litellm]

The router runs with auth on, the audit log and metrics enabled. LiteLLM lives in its own venv,
`.venv-litellm`, created here when missing (`pip install 'litellm[proxy]'`). Everything stays on
127.0.0.1. The script prints figures and ratios; it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from http_load import LoadResult, request_bytes, run_load, worker  # benchmarks/ is the script's folder
from procs import free_port, serve_asgi, wait_port

ROOT = Path(__file__).resolve().parents[1]
LITELLM_VENV = ROOT / ".venv-litellm"
BENCH_KEY = "bench-key-0123456789"
ANSWER = json.dumps(
    {
        "id": "cmpl-fixed",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fixed answer"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
).encode()
METRICS = b'vllm:num_requests_waiting{model_name="fake-model"} 0\n'
REQUEST_BODY = json.dumps(
    {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
).encode()


# ---------------------------------------------------------------- the fixed-answer upstream
async def fixed_app(scope, receive, send):  # noqa: ANN001 (raw ASGI)
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    body, ctype = (METRICS, b"text/plain") if path == "/metrics" else (ANSWER, b"application/json")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})


def serve_floor(upstream_port: int, port: int) -> None:
    """The floor of any Python proxy here: uvicorn + the router's keep-alive client, no logic at all."""

    from inference.router.upstream_http import UpstreamHttpClient

    client: list[UpstreamHttpClient] = []

    async def app(scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return
        if not client:
            client.append(UpstreamHttpClient("127.0.0.1", upstream_port, connect_timeout_s=1.0))
        body = (await receive())["body"]
        resp = await client[0].request(
            client[0].request_bytes(b"POST", scope["path"], body, b"Content-Type: application/json\r\n")
        )
        data = await resp.read()
        resp.close()
        await send(
            {"type": "http.response.start", "status": resp.status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": data})

    serve_asgi(app, port, proxy_headers=False)


def start_floor(upstream_port: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-floor", str(upstream_port), str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wait_port(port, proc)
    return proc, port


def serve_upstream(port: int) -> None:
    serve_asgi(fixed_app, port)


# ---------------------------------------------------------------- processes
def start_upstream() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-upstream", str(port)])
    wait_port(port, proc)
    return proc, port


def _tree(pid: int) -> list:
    import psutil

    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def rss_mb(pid: int) -> float:
    return sum(p.memory_info().rss for p in _tree(pid)) / 2**20


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its children."""
    total = 0.0
    for p in _tree(pid):
        t = p.cpu_times()
        total += t.user + t.system
    return total


def litellm_overhead_ms(port: int) -> str:
    """LiteLLM's own report of the latency it added (response header), for one request."""
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=REQUEST_BODY,
        headers={"Authorization": f"Bearer sk-{BENCH_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.headers.get("x-litellm-overhead-duration-ms", "n/a")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_router(tmp: Path, upstream_port: int, cloud_port: int | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cfg: dict = {
        "upstreams": [{"url": f"http://127.0.0.1:{upstream_port}"}],
        "policy": {"default_class": "public" if cloud_port else "internal", "cloud_allowed": ["public"]},
        "auth": {"keys_sha256": [hashlib.sha256(BENCH_KEY.encode()).hexdigest()]},
        "audit": {"enabled": True, "path": str(tmp / f"audit-{port}.jsonl")},
        "metrics": {"enabled": True},
    }
    if cloud_port:
        cfg["cloud"] = {"base_url": f"http://127.0.0.1:{cloud_port}", "api_key": "${BENCH_CLOUD_KEY}"}
    path = tmp / f"router-{port}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    env = {**os.environ, "BENCH_CLOUD_KEY": "sk-bench-cloud"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "inference.router", "--config", str(path), "--port", str(port)], cwd=ROOT, env=env
    )
    wait_port(port, proc)
    return proc, port


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        print("creating .venv-litellm (pip install 'litellm[proxy]') ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


def start_litellm(tmp: Path, upstream_port: int) -> tuple[subprocess.Popen, int]:
    exe = ensure_litellm()
    port = free_port()
    cfg = {
        "model_list": [
            {
                "model_name": "fake-model",
                "litellm_params": {
                    "model": "openai/fake-model",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "unused",
                },
            }
        ]
    }
    path = tmp / "litellm.yaml"
    path.write_text(json.dumps(cfg))
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": "sk-" + BENCH_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    proc = subprocess.Popen(
        [str(exe), "--config", str(path), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc, timeout=180)
    return proc, port


# ---------------------------------------------------------------- death -> cloud
async def _death_to_cloud(router_port: int, victim: subprocess.Popen, how: signal.Signals) -> tuple[float, int, int]:
    payload = request_bytes(
        router_port, REQUEST_BODY, {"Authorization": f"Bearer {BENCH_KEY}", "X-Data-Class": "public"}
    )
    routes: list = []
    result = LoadResult()
    stop_at = time.perf_counter() + 4.0
    workers = [asyncio.ensure_future(worker(router_port, payload, stop_at, result, True, routes)) for _ in range(4)]
    await asyncio.sleep(1.0)
    killed_at = time.monotonic()
    os.kill(victim.pid, how)
    await asyncio.gather(*workers)
    first_cloud = next(
        (t for t, status, route in routes if route == "cloud" and status == 200 and t >= killed_at), None
    )
    failed = sum(1 for t, status, _ in routes if status != 200)
    total = len(routes)
    return ((first_cloud - killed_at) * 1000.0 if first_cloud else float("nan")), failed + result.errors, total


# ---------------------------------------------------------------- main
def fmt(r: LoadResult) -> str:
    return f"p50 {r.pct(0.5):7.3f} ms  p99 {r.pct(0.99):7.3f} ms  {r.rps:8.0f} req/s  errors {r.errors}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    if args.serve_floor:
        serve_floor(*args.serve_floor)
        return
    import uvloop

    print(f"bench_router: {os.cpu_count()} CPUs, load generator and servers share them; {args.seconds:g} s per run")
    results: dict[tuple[str, int], LoadResult] = {}
    cpu_us: dict[tuple[str, int], float] = {}  # CPU of the measured server (router / litellm / upstream) per request
    rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        upstream, up_port = start_upstream()
        try:
            targets: list[tuple[str, object]] = [
                ("direct", None),
                ("floor", start_floor),
                ("router", start_router),
                ("litellm", start_litellm),
            ]
            if args.skip_litellm:
                targets = targets[:3]
            for name, starter in targets:
                proc = None
                port, headers = up_port, {}
                if starter is start_floor:
                    proc, port = start_floor(up_port)
                elif starter is start_router:
                    proc, port = start_router(tmp, up_port)
                    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
                elif starter is start_litellm:
                    proc, port = start_litellm(tmp, up_port)
                    headers = {"Authorization": f"Bearer sk-{BENCH_KEY}"}
                try:
                    if starter is start_litellm:
                        print(f"  litellm reports its own overhead as {litellm_overhead_ms(port)} ms (one request)")
                    measured = proc.pid if proc else upstream.pid
                    for conc in (1, 32):
                        uvloop.run(run_load(port, REQUEST_BODY, headers, conc, args.warmup, 0.0))
                        before = cpu_s(measured)
                        res = uvloop.run(run_load(port, REQUEST_BODY, headers, conc, args.seconds, 0.0))
                        cpu_us[(name, conc)] = (cpu_s(measured) - before) / max(1, len(res.latencies)) * 1e6
                        results[(name, conc)] = res
                        print(
                            f"  {name:8s} c={conc:<3d} {fmt(res)}  server CPU {cpu_us[(name, conc)]:6.0f} us/req",
                            flush=True,
                        )
                    rss[name] = rss_mb(proc.pid if proc else upstream.pid)
                finally:
                    if proc is not None:
                        stop(proc)
            deaths = {}
            for how in (signal.SIGKILL, signal.SIGSTOP):
                local, local_port = start_upstream()
                cloud, cloud_port = start_upstream()
                router, router_port = start_router(tmp, local_port, cloud_port)
                try:
                    time.sleep(0.5)
                    deaths[how.name] = uvloop.run(_death_to_cloud(router_port, local, how))
                finally:
                    for p in (router, local, cloud):
                        stop(p)
        finally:
            stop(upstream)

    print("\nsummary (added latency = router p50/p99 minus direct p50/p99)")
    for conc in (1, 32):
        d, r = results[("direct", conc)], results[("router", conc)]
        line = (
            f"  c={conc:<3d} router added p50 {r.pct(0.5) - d.pct(0.5):+.3f} ms, p99 {r.pct(0.99) - d.pct(0.99):+.3f} ms;"
            f" router/direct req/s {r.rps / d.rps:.2f}"
        )
        if ("litellm", conc) in results:
            lt = results[("litellm", conc)]
            line += (
                f"; litellm added p50 {lt.pct(0.5) - d.pct(0.5):+.3f} ms; router/litellm req/s {r.rps / lt.rps:.1f}x"
            )
        print(line)
    if ("floor", 32) in results:
        f32 = results[("floor", 32)].rps / results[("direct", 32)].rps
        print(
            f"  floor (uvicorn + keep-alive client, no logic) reaches {f32:.0%} of direct req/s at c=32; "
            f"the router {results[('router', 32)].rps / results[('floor', 32)].rps:.0%} of the floor"
        )
    print(
        "  server CPU per request (the upstream's for direct): "
        + ", ".join(f"{n} c={c} {v:.0f} us" for (n, c), v in cpu_us.items())
    )
    print("  RSS after load: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items() if k != "direct"))
    for name, (ms, failed, total) in deaths.items():
        print(f"  local upstream {name}: first cloud answer {ms:.0f} ms after; {failed} failed of {total} requests")
    r1 = results[("router", 1)].pct(0.5) - results[("direct", 1)].pct(0.5)
    r32 = results[("router", 32)].rps / results[("direct", 32)].rps
    print(
        "\ntargets: added p50 at c=1 <= 0.5 ms: " + ("met" if r1 <= 0.5 else "MISSED") + f" ({r1:.3f} ms); "
        "router >= 80% of direct req/s at c=32: " + ("met" if r32 >= 0.8 else "MISSED") + f" ({r32:.0%})",
        end="",
    )
    if ("litellm", 32) in results:
        x = results[("router", 32)].rps / results[("litellm", 32)].rps
        print("; router >= 5x litellm at c=32: " + ("met" if x >= 5 else "MISSED") + f" ({x:.1f}x)")
    else:
        print()


if __name__ == "__main__":
    main()
