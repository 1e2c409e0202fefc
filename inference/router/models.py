"""GET /v1/models: the local pool's list when one answers, else the models the cloud mapping names."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from inference.router.app import RouterApp


async def list_models(app: RouterApp) -> tuple[int, bytes, str]:
    session = app.fallback.session
    for up in app.pool.upstreams:
        if not up.circuit.allows_requests or session is None:
            continue
        try:
            async with session.get(up.base + "/v1/models", headers=up.headers,
                                   timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                body = await resp.read()
                if resp.status == 200 and isinstance(json.loads(body), dict):
                    return 200, body, "local"
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            continue
    names: list[str] = []
    if app.config.cloud is not None:
        for local, cloud in app.config.cloud.models.items():
            for name in (local, cloud):
                if name != "*" and name not in names:
                    names.append(name)
    created = int(time.time())
    data = [{"id": n, "object": "model", "created": created, "owned_by": "dsdeploy"} for n in names]
    return 200, json.dumps({"object": "list", "data": data}).encode(), "local"
