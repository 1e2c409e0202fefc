"""GET /v1/models, /health, /ready, /metrics"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from ...metrics import CONTENT_TYPE
from ..errors import error_response

router = APIRouter()
_STARTED = int(time.time())


@router.get("/v1/models")
async def models(request: Request) -> dict:
    loaded = request.app.state.runtime.loaded
    return {"object": "list", "data": [{
        "id": loaded.served_model_name, "object": "model", "created": _STARTED, "owned_by": "dsdeploy",
        "root": loaded.source, "max_model_len": loaded.max_model_len,
    }]}


@router.get("/health")
async def health() -> dict:
    """The process is alive (the model may still be draining)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> Response:
    runtime = request.app.state.runtime
    if not runtime.ready:
        return error_response(503, "the server is draining and takes no new requests", None, "shutting_down")
    return JSONResponse({"status": "ready", "model": runtime.loaded.served_model_name,
                         "running": runtime.engine.num_running, "waiting": runtime.engine.num_waiting})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.runtime.metrics.render(), media_type=CONTENT_TYPE)
