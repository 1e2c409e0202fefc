"""GET /v1/models: the local pool's list when one answers, else the models the cloud mapping names; and
GET /v1/models/{model}: one entry of that list (``client.models.retrieve``), or a 404 ``model_not_found``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from inference.router.errors import error_body

if TYPE_CHECKING:
    from inference.router.app import RouterApp


CACHE_S = 5.0  # one answer serves every caller for this long (the list changes with deployments, not requests)


async def list_models(app: RouterApp) -> tuple[int, bytes, str]:
    cached = app.models_cache
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    answer = await _list_models(app)
    app.models_cache = (time.monotonic() + CACHE_S, answer)
    return answer


MAX_MODEL_ID = 256  # longer ids are refused before any lookup


async def retrieve_model(app: RouterApp, model: str) -> tuple[int, bytes, str]:
    """The entry for ``model`` from the list ``list_models`` answers (the same source and cache)."""
    status, body, route = await list_models(app)
    if status == 200 and len(model) <= MAX_MODEL_ID:
        for entry in json.loads(body).get("data") or []:
            if isinstance(entry, dict) and entry.get("id") == model:
                return 200, json.dumps(entry).encode(), route
    shown = model if len(model) <= MAX_MODEL_ID else model[:MAX_MODEL_ID] + "..."
    return 404, error_body(404, f"The model {shown!r} does not exist.", code="model_not_found", param="model"), route


async def _list_models(app: RouterApp) -> tuple[int, bytes, str]:
    for up in app.pool.upstreams:
        if not up.circuit.allows_requests:
            continue
        raw = up.client.request_bytes(b"GET", up.prefix + "/v1/models", b"", up.raw_headers)
        resp = None
        try:
            async with asyncio.timeout(2.0):
                resp = await up.client.request(raw)
                body = await resp.read()
            if resp.status == 200 and isinstance(json.loads(body), dict):
                return 200, body, "local"
        except (TimeoutError, OSError, ValueError):
            continue
        finally:
            if resp is not None:
                resp.close()
    names: list[str] = []
    if app.config.cloud is not None:
        for local, cloud in app.config.cloud.models.items():
            for name in (local, cloud):
                if name != "*" and name not in names:
                    names.append(name)
    created = int(time.time())
    data = [{"id": n, "object": "model", "created": created, "owned_by": "dsdeploy"} for n in names]
    return 200, json.dumps({"object": "list", "data": data}).encode(), "local"
