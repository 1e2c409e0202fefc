"""A loopback stand-in for the DeepSeek API: speaks its OpenAI-compatible protocol and records requests.

Runs a real uvicorn server on 127.0.0.1 in a background thread. Answers are fixed and marked, so a test
can tell a cloud answer from a local one.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

ANSWER = "answer from the DeepSeek stand-in"


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class CloudStandIn:
    port: int
    requests: list[RecordedRequest] = field(default_factory=list)

    def _record(self, request: Request, body: dict) -> None:
        self.requests.append(RecordedRequest(request.url.path, dict(request.headers), body))

    async def chat(self, request: Request):
        body = json.loads(await request.body())
        self._record(request, body)
        model = body.get("model", "deepseek-chat")
        usage = {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "cmpl-standin",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ANSWER}}
                    ],
                    "usage": usage,
                }
            )

        async def events():
            for i, word in enumerate(ANSWER.split(" ")):
                chunk = {
                    "id": "cmpl-standin",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": (" " if i else "") + word}, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            last = {
                "id": "cmpl-standin",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": usage,
            }
            yield f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(self, request: Request):
        self._record(request, {})
        return JSONResponse({"object": "list", "data": [{"id": "deepseek-chat", "object": "model"}]})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/models", self.models, methods=["GET"]),
            ]
        )


class RunningStandIn:
    """Context manager: start the stand-in on 127.0.0.1:port, stop it on exit."""

    def __init__(self, port: int) -> None:
        self.standin = CloudStandIn(port)
        config = uvicorn.Config(self.standin.app(), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> CloudStandIn:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("cloud stand-in did not start")
            time.sleep(0.05)
        return self.standin

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
