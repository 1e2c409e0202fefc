"""A small OpenAI-protocol server for the router tests: a local upstream or the DeepSeek stand-in.

Run: ``python fake_upstream.py --port P --name NAME``. Behaviour is switched at run time with
``POST /_control`` (JSON, see ``Behaviour``); ``GET /_record`` returns what it received (path,
headers, body), ``POST /_reset`` clears the record and restores the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

DEFAULTS: dict[str, Any] = {
    "mode": "ok",          # ok | status | malformed | cut_stream
    "status": 500,         # for mode=status
    "retry_after": None,   # Retry-After header value for mode=status
    "fail_next": 0,        # answer the next N completions with `status` first, then behave as `mode`
    "delay": 0.0,          # seconds before the first byte
    "chunks": 4,           # stream: number of content chunks
    "chunk_delay": 0.0,    # stream: seconds between chunks
    "waiting": 0,          # value of vllm:num_requests_waiting
    "reasoning": False,    # include the model's thinking
    "reasoning_field": "reasoning_content",  # where: DeepSeek's reasoning_content or vLLM's reasoning
    "usage": None,         # replace the answer's usage object (e.g. a malformed one)
}


class FakeUpstream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.behaviour = dict(DEFAULTS)
        self.record: list[dict[str, Any]] = []
        self.in_flight = 0
        self.served = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path == "/health":
            return await _send(send, 200, b'{"ok":true}')
        if path == "/metrics":
            text = (f"# TYPE vllm:num_requests_waiting gauge\n"
                    f'vllm:num_requests_waiting{{model_name="fake-model"}} {self.behaviour["waiting"]}\n'
                    f'vllm:num_requests_running{{model_name="fake-model"}} {self.in_flight}\n')
            return await _send(send, 200, text.encode(), b"text/plain")
        if path == "/_control":
            self.behaviour.update(json.loads(body or b"{}"))
            return await _send(send, 200, json.dumps(self.behaviour).encode())
        if path == "/_reset":
            self.behaviour = dict(DEFAULTS)
            self.record.clear()
            self.served = 0
            return await _send(send, 200, b"{}")
        if path == "/_record":
            return await _send(send, 200, json.dumps({"requests": self.record, "served": self.served}).encode())
        if path == "/v1/models":
            return await _send(send, 200, json.dumps(
                {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": self.name}]}).encode())
        if path in ("/v1/chat/completions", "/v1/completions"):
            self.in_flight += 1
            try:
                await self._completion(scope, body, send, path)
            finally:
                self.in_flight -= 1
            return None
        return await _send(send, 404, b'{"error":{"message":"not found"}}')

    async def _completion(self, scope: dict[str, Any], body: bytes, send: Any, path: str) -> None:
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            data = json.loads(body)
        except ValueError:
            data = {"_raw": body.decode("latin-1")}
        self.record.append({"path": path, "headers": headers, "body": data})
        b = self.behaviour
        if b["delay"]:
            await asyncio.sleep(b["delay"])
        if b["fail_next"] > 0:
            b["fail_next"] -= 1
            return await self._status(send)
        if b["mode"] == "status":
            return await self._status(send)
        if b["mode"] == "malformed":
            return await _send(send, 200, b'{"id": "x", "choices": [ this is not json')
        model = data.get("model", "fake-model")
        text = f"answer from {self.name}"
        if data.get("stream"):
            return await self._stream(send, model, text, cut=b["mode"] == "cut_stream")
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if b["reasoning"]:
            message[b["reasoning_field"]] = f"thinking in {self.name}"
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        if path == "/v1/completions":
            choice = {"index": 0, "text": text, "finish_reason": "stop"}
        self.served += 1
        await _send(send, 200, json.dumps({
            "id": f"cmpl-{self.name}-{self.served}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [choice],
            "usage": b["usage"] or {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }).encode())

    async def _status(self, send: Any) -> None:
        b = self.behaviour
        extra = [(b"retry-after", str(b["retry_after"]).encode())] if b["retry_after"] is not None else []
        await _send(send, int(b["status"]), json.dumps(
            {"error": {"message": f"{self.name} says {b['status']}", "type": "x", "param": None, "code": None}}
        ).encode(), extra=extra)

    async def _stream(self, send: Any, model: str, text: str, cut: bool) -> None:
        b = self.behaviour
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        n = int(b["chunks"])
        if cut and n == 0:
            raise RuntimeError("fake upstream: stream cut before its first byte")
        for i in range(n):
            delta: dict[str, Any] = {"content": f"{text} part {i} "}
            if i == 0:
                delta["role"] = "assistant"
                if b["reasoning"]:
                    delta[b["reasoning_field"]] = f"thinking in {self.name}"
            chunk = {"id": f"chunk-{self.name}", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                        "more_body": True})
            if cut and i >= n // 2:
                raise RuntimeError("fake upstream: stream cut on purpose")
            if b["chunk_delay"]:
                await asyncio.sleep(b["chunk_delay"])
        final = {"id": f"chunk-{self.name}", "object": "chat.completion.chunk", "created": 0, "model": model,
                 "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}}
        self.served += 1
        await send({"type": "http.response.body", "body": b"data: " + json.dumps(final).encode()
                    + b"\n\ndata: [DONE]\n\n", "more_body": False})


async def _send(send: Any, status: int, body: bytes, ctype: bytes = b"application/json",
                extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="upstream")
    args = parser.parse_args()
    uvicorn.run(FakeUpstream(args.name), host="127.0.0.1", port=args.port, log_level="error",
                access_log=False, loop="uvloop", http="httptools", lifespan="off")


if __name__ == "__main__":
    main()
