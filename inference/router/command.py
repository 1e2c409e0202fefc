"""`dsdeploy route --config FILE [--host H] [--port P]`: run the router (uvicorn, uvloop, httptools)."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "route",
        help="run the local-first router with DeepSeek cloud fallback",
        description="Run the OpenAI-compatible router: local upstreams first, the DeepSeek API as fallback "
        "(see docs/router.md for the config file).",
    )
    add_arguments(parser)
    parser.set_defaults(func=run_command)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="router YAML config")
    parser.add_argument("--host", default=None, help="listen address (default: server.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="listen port (default: server.port, 8080)")
    parser.add_argument("--allow-insecure-bind", action="store_true", help="allow a non-loopback address with auth off")
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])


def run_command(args: argparse.Namespace) -> int:
    from inference.router.config import RouterConfigError, load_router_config

    try:
        config = load_router_config(args.config)
        host = args.host or config.server.host
        port = args.port or config.server.port
        config.check_bind(host, allow_insecure=args.allow_insecure_bind)
    except RouterConfigError as exc:
        print(f"dsdeploy route: {exc}", file=sys.stderr)
        return 2
    print(describe(config, host, port), file=sys.stderr, flush=True)
    for warning in config.warnings():
        print(f"dsdeploy route: warning: {warning}", file=sys.stderr, flush=True)
    serve(config, host, port, log_level=args.log_level)
    return 0


def describe(config, host: str, port: int) -> str:  # noqa: ANN001
    """One line for the operator: where it listens and what it will do (no secrets)."""
    shown = f"[{host}]" if ":" in host else host
    cloud = (
        "off"
        if config.cloud is None
        else (f"{urlsplit(config.cloud.base_url).netloc} for {', '.join(config.policy.cloud_allowed) or 'no'} data")
    )
    auth = f"{len(config.auth.keys_sha256) + len(config.auth.keys)} key(s)" if config.auth.enabled else "off"
    audit = config.audit.path if config.audit.enabled else "off"
    return (
        f"dsdeploy route: listening on http://{shown}:{port}; local upstreams: "
        f"{', '.join(u.label for u in config.upstreams) or 'none (cloud-only)'}; cloud fallback: {cloud}; "
        f"auth: {auth}; audit: {audit}"
    )


def uvicorn_config(
    app,
    config,
    host: str,
    port: int,
    *,
    loop: str = "uvloop",  # noqa: ANN001
    log_level: str = "warning",
):  # noqa: ANN201
    """The uvicorn settings of the router (``dsdeploy route`` and the tests): httptools with the connection
    bounds of ``inference.router.connections``."""
    import uvicorn

    from inference.router.connections import ConnectionLimits, guarded_protocol

    server = config.server
    limits = ConnectionLimits(
        max_connections=server.max_connections,
        max_header_bytes=server.max_header_bytes,
        max_headers=server.max_headers,
        header_timeout_s=server.header_timeout_s,
        body_timeout_s=config.timeouts.body_s + 1.0,
        keepalive_s=server.keepalive_s,
        write_stall_s=config.timeouts.stream_idle_s + 1.0,
    )  # after the relay's own cut (client_stalled)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http=guarded_protocol(limits),
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_keep_alive=server.keepalive_s,
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )


def serve(config, host: str, port: int, *, log_level: str = "warning") -> None:  # noqa: ANN001
    import uvicorn

    from inference.router.app import RouterApp

    uvicorn.Server(uvicorn_config(RouterApp(config), config, host, port, log_level=log_level)).run()
