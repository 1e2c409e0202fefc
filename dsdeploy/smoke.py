"""`dsdeploy smoke`: check any deployed endpoint in three calls and say plainly what works.

Lists the models, asks for one chat completion and one streamed chat completion; reports status,
latency and route of each. Exit code 0 only when all three pass.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from dsdeploy.endpoint import Endpoint, EndpointError, ResponseMeta

PROMPT = "Reply with one short sentence: what is 2 + 2?"


@dataclass
class CheckResult:
    name: str
    ok: bool
    status: int | None
    latency_ms: float
    route: str | None
    detail: str


def _result(name: str, meta: ResponseMeta | None, ok: bool, detail: str, started: float) -> CheckResult:
    return CheckResult(
        name=name,
        ok=ok,
        status=meta.status if meta else None,
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        route=meta.route if meta else None,
        detail=detail,
    )


def check_models(endpoint: Endpoint) -> tuple[CheckResult, str | None]:
    started = time.perf_counter()
    try:
        models, meta = endpoint.models()
    except EndpointError as exc:
        return _result("models", None, False, str(exc), started), None
    if not models:
        return _result("models", meta, False, "no models listed", started), None
    return _result("models", meta, True, ", ".join(models[:3]), started), models[0]


def check_chat(endpoint: Endpoint, model: str, max_tokens: int) -> CheckResult:
    started = time.perf_counter()
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens}
    try:
        answer, meta = endpoint.chat(body)
    except EndpointError as exc:
        return _result("chat", None, False, str(exc), started)
    try:
        message = answer["choices"][0]["message"]
        text = (message.get("content") or "") + (message.get("reasoning_content") or "")
        tokens = answer["usage"]["completion_tokens"]
    except (KeyError, IndexError, TypeError):
        return _result("chat", meta, False, f"answer lacks choices/usage: {str(answer)[:120]}", started)
    ok = bool(text.strip()) and tokens > 0
    return _result("chat", meta, ok, f"{tokens} tokens: {text.strip()[:60]!r}", started)


def check_stream(endpoint: Endpoint, model: str, max_tokens: int) -> CheckResult:
    started = time.perf_counter()
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens}
    metas: list[ResponseMeta] = []
    text, chunks, errors = "", 0, []
    try:
        for event in endpoint.stream_chat(body, metas):
            chunks += 1
            text += event.content + event.reasoning
            if event.error:
                errors.append(event.error)
    except EndpointError as exc:
        return _result("stream", metas[0] if metas else None, False, str(exc), started)
    meta = metas[0] if metas else None
    if errors:
        return _result("stream", meta, False, f"error event: {errors[0]}", started)
    ttfb = f", first byte {meta.first_byte_s * 1000:.0f} ms" if meta and meta.first_byte_s else ""
    return _result("stream", meta, bool(text.strip()), f"{chunks} chunks{ttfb}: {text.strip()[:40]!r}", started)


def run_smoke(
    url: str,
    api_key: str | None = None,
    data_class: str | None = None,
    model: str | None = None,
    max_tokens: int = 16,
    timeout_s: float = 120.0,
) -> list[CheckResult]:
    with Endpoint(url, api_key=api_key, data_class=data_class, timeout_s=timeout_s) as endpoint:
        models_result, first_model = check_models(endpoint)
        results = [models_result]
        chosen = model or first_model
        if chosen is None:
            skipped = "skipped: no model to ask (models check failed)"
            results += [CheckResult(n, False, None, 0.0, None, skipped) for n in ("chat", "stream")]
            return results
        results.append(check_chat(endpoint, chosen, max_tokens))
        results.append(check_stream(endpoint, chosen, max_tokens))
        return results


def results_json(url: str, results: list[CheckResult]) -> str:
    return json.dumps({"url": url, "ok": all(r.ok for r in results), "checks": [asdict(r) for r in results]})


def run_smoke_command(args) -> int:
    """`dsdeploy smoke`: print a table (or JSON) and exit non-zero when any check fails."""
    from rich.console import Console
    from rich.table import Table

    try:
        results = run_smoke(args.url, api_key=args.api_key, data_class=args.data_class, model=args.model,
                            max_tokens=args.max_tokens, timeout_s=args.timeout)
    except ValueError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {exc}")
        return 2
    ok = all(r.ok for r in results)
    if args.json:
        print(results_json(args.url, results))
        return 0 if ok else 1
    table = Table(title=f"dsdeploy smoke {args.url}")
    for column in ("check", "result", "status", "latency ms", "route", "detail"):
        table.add_column(column)
    for r in results:
        table.add_row(r.name, "[green]pass[/green]" if r.ok else "[red]FAIL[/red]",
                      str(r.status or "-"), f"{r.latency_ms:.0f}", r.route or "-", r.detail)
    console = Console()
    console.print(table)
    console.print("[green]all checks passed[/green]" if ok else "[red]smoke test failed[/red]")
    return 0 if ok else 1
