"""GET /v1/models, /health, /ready, /metrics"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from ...metrics import CONTENT_TYPE
from ..errors import error_response
from ..generation import check_model

router = APIRouter()
_STARTED = int(time.time())


@router.get("/v1/models")
async def models(request: Request) -> dict:
    return {"object": "list", "data": [_model(request.app.state.runtime)]}


@router.get("/v1/models/{model:path}")
async def model(request: Request, model: str) -> dict:
    """One model (``client.models.retrieve``); a name this server does not serve is a 404."""
    runtime = request.app.state.runtime
    check_model(runtime, model)
    return _model(runtime)


def _model(runtime) -> dict:
    loaded = runtime.loaded
    return {
        "id": loaded.served_model_name,
        "object": "model",
        "created": _STARTED,
        "owned_by": "dsdeploy",
        "root": model_root(runtime.config.model),
        "max_model_len": loaded.max_model_len,
    }


def model_root(model: str) -> str:
    """What ``--model`` named, without the local directories around it: a Hugging Face repo id as given,
    a local folder or file by its name (never the conversion cache's path)."""
    path = Path(model).expanduser()
    return path.name if path.exists() else model


def _engine_failed(runtime) -> Response:
    return error_response(
        503, f"the engine has failed ({runtime.engine.failure}); the server must be restarted", None, "engine_failed"
    )


@router.get("/health")
async def health(request: Request) -> Response:
    """The process can serve (also while draining); 503 once the engine thread has died, so that the
    liveness probe restarts the server."""
    runtime = request.app.state.runtime
    if not runtime.healthy:
        return _engine_failed(runtime)
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> Response:
    runtime = request.app.state.runtime
    if not runtime.healthy:
        return _engine_failed(runtime)
    if not runtime.ready:
        return error_response(503, "the server is draining and takes no new requests", None, "shutting_down")
    return JSONResponse(
        {
            "status": "ready",
            "model": runtime.loaded.served_model_name,
            "running": runtime.engine.num_running,
            "waiting": runtime.engine.num_waiting,
        }
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.runtime.metrics.render(), media_type=CONTENT_TYPE)
