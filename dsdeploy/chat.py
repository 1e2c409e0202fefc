"""`dsdeploy chat "PROMPT"`: stream one answer to the terminal and say which route answered."""

from __future__ import annotations

import sys

from rich.console import Console

from dsdeploy.endpoint import Endpoint, EndpointError, ResponseMeta


def run_chat(args) -> int:
    err = Console(stderr=True, soft_wrap=True)
    try:
        endpoint = Endpoint(args.url, api_key=args.api_key, data_class=args.data_class)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    with endpoint:
        try:
            model = args.model or _first_model(endpoint)
            body: dict = {"model": model, "messages": [{"role": "user", "content": args.prompt}],
                          "max_tokens": args.max_tokens}
            if args.temperature is not None:
                body["temperature"] = args.temperature
            metas: list[ResponseMeta] = []
            usage, thinking = None, False
            for event in endpoint.stream_chat(body, metas):
                if event.error:
                    err.print(f"\n[red]stream error:[/red] {event.error}")
                    return 1
                if event.reasoning:
                    thinking = True
                    err.print(event.reasoning, end="", style="dim", highlight=False)
                if event.content:
                    if thinking:
                        err.print()
                        thinking = False
                    sys.stdout.write(event.content)
                    sys.stdout.flush()
                usage = event.usage or usage
        except EndpointError as exc:
            err.print(f"[red]error:[/red] {exc}")
            return 1
    sys.stdout.write("\n")
    meta = metas[0]
    tokens = f", {usage['completion_tokens']} tokens" if usage else ""
    err.print(f"[dim]model {model} · route {meta.route or 'direct'} · request {meta.request_id or '-'}"
              f" · {meta.total_s:.2f} s{tokens}[/dim]")
    return 0


def _first_model(endpoint: Endpoint) -> str:
    models, _ = endpoint.models()
    if not models:
        raise EndpointError("the endpoint lists no models; pass --model")
    return models[0]
