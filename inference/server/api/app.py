"""The FastAPI application: routes, OpenAI-shaped errors, body-size limit, drain gate, X-Request-Id."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..runtime import ENGINE_STOP_S, Runtime
from .engine_key import EngineKeyMiddleware
from .errors import InternalErrorMiddleware, error_response, install_error_handlers
from .prompts import PromptBuilder
from .request_id import RequestIdMiddleware
from .routes import chat, completions, system

_ALWAYS_OPEN = frozenset({"/health", "/ready", "/metrics", "/v1/models"})


class GateMiddleware:
    """Refuses bodies over the size limit (400) and new work while draining (503); counts requests in flight."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _ALWAYS_OPEN or scope["path"].startswith("/v1/models/"):
            await self.app(scope, receive, send)
            return
        runtime, limit = self.runtime, self.runtime.config.max_body_bytes
        if runtime.draining:
            await error_response(
                503, "the server is draining and takes no new requests", None, "shutting_down", {"Retry-After": "1"}
            )(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = error_response(
            400, f"the request body is larger than the limit of {limit} bytes", None, "request_too_large"
        )
        if declared is not None and declared.isdigit() and int(declared) > limit:
            runtime.metrics.rejected.labels(reason="body_too_large").inc()
            await too_large(scope, receive, send)
            return
        chunks, size = [], 0
        while True:  # read the body up to the limit, then replay it to the app
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                runtime.metrics.rejected.labels(reason="body_too_large").inc()
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        runtime.request_started()
        try:
            await self.app(scope, replay, send)
        finally:
            runtime.request_ended()


def create_app(runtime: Runtime) -> FastAPI:
    prompts = PromptBuilder(runtime.loaded.tokenizer, runtime.loaded.max_model_len)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        runtime.engine.start()
        runtime.metrics.ready.set(1)
        yield
        runtime.metrics.ready.set(0)
        runtime.engine.shutdown(timeout=ENGINE_STOP_S)
        prompts.close()

    app = FastAPI(title="dsdeploy model server", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.state.prompts = prompts
    install_error_handlers(app)
    for module in (chat, completions, system):
        app.include_router(module.router)
    app.add_middleware(GateMiddleware, runtime=runtime)
    if runtime.config.api_key is not None:  # outside the gate: no body is read for a caller without the key
        app.add_middleware(EngineKeyMiddleware, api_key=runtime.config.api_key.get_secret_value())
    app.add_middleware(InternalErrorMiddleware)  # also catches the gate's errors
    app.add_middleware(RequestIdMiddleware)  # outermost: every answer, errors included, carries X-Request-Id
    return app
