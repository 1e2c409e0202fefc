"""`dsdeploy smoke`: check any deployed endpoint in three calls and say plainly what works.

Lists the models, asks for one chat completion and one streamed chat completion; reports status,
latency and route of each. Exit code 0 only when all three pass. No retries: a smoke test reports
failures instead of hiding them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from inference.client import ApiError, ChatClient, delta_of

PROMPT = "Reply with one short sentence: what is 2 + 2?"


@dataclass
class CheckResult:
    name: str
    ok: bool
    status: int | None
    latency_ms: float
    route: str | None
    detail: str


def _result(client: ChatClient, name: str, ok: bool, detail: str, started: float) -> CheckResult:
    return CheckResult(
        name=name,
        ok=ok,
        status=client.last_status,
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        route=client.last_route,
        detail=detail,
    )


def _reset(client: ChatClient) -> float:
    client.last_status = client.last_route = client.last_request_id = None
    return time.perf_counter()


def check_models(client: ChatClient) -> tuple[CheckResult, str | None]:
    started = _reset(client)
    try:
        models = client.models()
    except ApiError as exc:
        return _result(client, "models", False, str(exc), started), None
    if not models:
        return _result(client, "models", False, "no models listed", started), None
    return _result(client, "models", True, ", ".join(models[:3]), started), models[0]


def check_chat(client: ChatClient, model: str, max_tokens: int) -> CheckResult:
    started = _reset(client)
    try:
        answer = client.chat([{"role": "user", "content": PROMPT}], model=model, max_tokens=max_tokens)
    except ApiError as exc:
        return _result(client, "chat", False, str(exc), started)
    try:
        message = answer["choices"][0]["message"]
        text = (message.get("content") or "") + (message.get("reasoning_content") or "")
        tokens = answer["usage"]["completion_tokens"]
    except (KeyError, IndexError, TypeError):
        return _result(client, "chat", False, f"answer lacks choices/usage: {str(answer)[:120]}", started)
    return _result(
        client, "chat", bool(text.strip()) and tokens > 0, f"{tokens} tokens: {text.strip()[:60]!r}", started
    )


def check_stream(client: ChatClient, model: str, max_tokens: int) -> CheckResult:
    started = _reset(client)
    text, chunks, first_byte = "", 0, None
    try:
        for chunk in client.stream_chat(
            [{"role": "user", "content": PROMPT}],
            model=model,
            max_tokens=max_tokens,
            stream_options={"include_usage": True},
        ):
            first_byte = first_byte or time.perf_counter() - started
            chunks += 1
            content, reasoning, _ = delta_of(chunk)
            text += content + reasoning
    except ApiError as exc:
        return _result(client, "stream", False, str(exc), started)
    ttfb = f", first byte {first_byte * 1000:.0f} ms" if first_byte else ""
    return _result(client, "stream", bool(text.strip()), f"{chunks} chunks{ttfb}: {text.strip()[:40]!r}", started)


def run_smoke(
    url: str,
    api_key: str | None = None,
    data_class: str | None = None,
    model: str | None = None,
    max_tokens: int = 16,
    timeout_s: float = 120.0,
) -> list[CheckResult]:
    with ChatClient(url, api_key, data_class=data_class, max_attempts=1, timeout_s=timeout_s) as client:
        models_result, first_model = check_models(client)
        chosen = model or first_model
        if chosen is None:
            skipped = "skipped: no model to ask (models check failed)"
            return [models_result] + [CheckResult(n, False, None, 0.0, None, skipped) for n in ("chat", "stream")]
        return [models_result, check_chat(client, chosen, max_tokens), check_stream(client, chosen, max_tokens)]


def results_json(url: str, results: list[CheckResult]) -> str:
    return json.dumps({"url": url, "ok": all(r.ok for r in results), "checks": [asdict(r) for r in results]})


def run_smoke_command(args) -> int:
    """`dsdeploy smoke`: print a table (or JSON) and exit non-zero when any check fails."""
    from rich.console import Console
    from rich.table import Table

    try:
        results = run_smoke(
            args.url,
            api_key=args.api_key,
            data_class=args.data_class,
            model=args.model,
            max_tokens=args.max_tokens,
            timeout_s=args.timeout,
        )
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
        table.add_row(
            r.name,
            "[green]pass[/green]" if r.ok else "[red]FAIL[/red]",
            str(r.status or "-"),
            f"{r.latency_ms:.0f}",
            r.route or "-",
            r.detail,
        )
    console = Console()
    console.print(table)
    console.print("[green]all checks passed[/green]" if ok else "[red]smoke test failed[/red]")
    return 0 if ok else 1
