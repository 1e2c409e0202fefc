"""`dsdeploy chat "PROMPT"`: stream one answer to the terminal and say which route answered."""

from __future__ import annotations

import sys
import time

from rich.console import Console

from inference.client import ApiError, ChatClient, delta_of


def run_chat(args) -> int:
    err = Console(stderr=True, soft_wrap=True)
    try:
        client = ChatClient(args.url, args.api_key, data_class=args.data_class)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    started, usage, thinking = time.perf_counter(), None, False
    params: dict = {"max_tokens": args.max_tokens, "stream_options": {"include_usage": True}}
    if args.temperature is not None:
        params["temperature"] = args.temperature
    with client:
        try:
            models = [args.model] if args.model else client.models()
            if not models:
                raise ApiError("the endpoint lists no models; pass --model")
            for chunk in client.stream_chat([{"role": "user", "content": args.prompt}], model=models[0], **params):
                content, reasoning, _ = delta_of(chunk)
                if reasoning:
                    thinking = True
                    err.print(reasoning, end="", style="dim", highlight=False)
                if content:
                    if thinking:
                        err.print()
                        thinking = False
                    sys.stdout.write(content)
                    sys.stdout.flush()
                usage = chunk.get("usage") or usage
        except ApiError as exc:
            err.print(f"\n[red]error:[/red] {exc}")
            return 1
    sys.stdout.write("\n")
    tokens = f", {usage['completion_tokens']} tokens" if usage else ""
    err.print(
        f"[dim]model {models[0]} · route {client.last_route or 'direct'} · request "
        f"{client.last_request_id or '-'} · {time.perf_counter() - started:.2f} s{tokens}[/dim]"
    )
    return 0
