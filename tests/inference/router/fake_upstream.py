"""A fault-injecting OpenAI-protocol server for the router tests: a local engine, or the DeepSeek stand-in.

Run: ``python fake_upstream.py --port P --name NAME``. It is a raw asyncio server (httptools parses the
requests) rather than an ASGI app, so it can do what a broken engine or network does: reset a
connection, go silent in the middle of a stream, send half an event, never send ``[DONE]``.

Behaviour is switched at run time with ``POST /_control`` (JSON, keys of ``DEFAULTS``); ``GET /_record``
returns what it received (path, headers, body), ``POST /_reset`` clears the record and restores the
defaults. As the DeepSeek stand-in it also serves ``POST /beta/chat/completions``: the chat prefix
completion of https://api-docs.deepseek.com/guides/chat_prefix_completion (the last message is the
assistant's, with ``"prefix": true``; the answer continues that text and does not repeat it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import time
from http import HTTPStatus
from typing import Any

import httptools

DEFAULTS: dict[str, Any] = {
    # ok | status | malformed | braces | cut_stream | reset | stall | malformed_chunk | no_done | context_length
    # | content_filter | endless
    "mode": "ok",
    "status": 500,  # for mode=status
    "retry_after": None,  # Retry-After header value for mode=status
    "status_message": None,  # the error message of mode=status (default "NAME says STATUS")
    "fail_next": 0,  # answer the next N completions with `status` first, then behave as `mode`
    "fail_mode": "status",  # what those N failures are: status | reset
    "delay": 0.0,  # seconds before the status line
    "first_token_delay": 0.0,  # stream: the status line at once, the first event after this (a prefill)
    "prefill_tokens_per_s": None,  # stream: first_token_delay = prompt tokens / this; exported in /metrics
    "chunks": 4,  # stream: number of content chunks (and parts of a whole answer's text)
    "chunk_delay": 0.0,  # stream: seconds between chunks
    "cut_after": None,  # cut_stream / stall / malformed_chunk: after this many chunks (default chunks//2 + 1)
    "waiting": 0,  # value of vllm:num_requests_waiting
    "reasoning": False,  # include the model's thinking
    "reasoning_field": "reasoning_content",  # where: DeepSeek's reasoning_content or vLLM's reasoning
    "usage": None,  # replace the answer's usage object (e.g. a malformed one)
    "text": None,  # the answer's text (split in `chunks` parts); default "answer from NAME part i " each
    "refuse_prefix": False,  # stand-in: answer a chat prefix completion with a 400
    "foreign_prefix": "refuse",  # a prefix that is not how its own answer starts: refuse (400) or continue
    "health_status": 200,  # status of GET /health
    "sse_preamble": "",  # stream: lines sent before the first event (e.g. "retry: 3000\n")
    "headers": {},  # extra response headers on completions (name -> value, latin-1)
    "content_type": "application/json",  # of a whole completion answer (latin-1)
    "redirect_to": None,  # completions: answer 307 with this Location
    "drain_linger_s": 0.3,  # SIGTERM: seconds between the last open answer and the exit
}
CONTEXT_MESSAGE = (
    "This model's maximum context length is 2048 tokens. However, you requested 4000 tokens "
    "(3000 in the messages, 1000 in the completion). Please reduce the length of the messages "
    "or completion."
)  # vLLM's wording (BadRequestError)


def prompt_tokens(data: dict[str, Any]) -> int:
    text = json.dumps(data.get("messages") or data.get("prompt") or "")
    return max(1, len(text) // 4)


class FakeUpstream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.behaviour = dict(DEFAULTS)
        self.record: list[dict[str, Any]] = []
        self.in_flight = 0
        self.served = 0
        self.prompt_tokens_total = 0
        self.prefill_seconds = 0.0
        self.ttft_seconds = 0.0
        self.draining = False  # SIGTERM: /health and new completions answer 503, open ones finish, then it exits

    def parts(self, data: dict[str, Any]) -> list[str]:
        b = self.behaviour
        n = int(b["chunks"])
        if b["text"] is None:
            return [f"answer from {self.name} part {i} " for i in range(n)]
        return _split(b["text"], n)

    def metrics(self) -> bytes:
        lines = [
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{model_name="fake-model"}} {self.behaviour["waiting"]}',
            f'vllm:num_requests_running{{model_name="fake-model"}} {self.in_flight}',
            # the TTFT histogram's count and sum, as vLLM's (one per answer that got its first token)
            f'vllm:time_to_first_token_seconds_count{{model_name="fake-model"}} {self.served}',
            f'vllm:time_to_first_token_seconds_sum{{model_name="fake-model"}} {self.ttft_seconds}',
        ]
        if self.behaviour["prefill_tokens_per_s"]:
            rate = float(self.behaviour["prefill_tokens_per_s"])
            tokens = self.prompt_tokens_total + 100_000  # as if it had prefilled 100k tokens at that rate before
            seconds = self.prefill_seconds + 100_000 / rate
            lines += [
                f'vllm:prompt_tokens_total{{model_name="fake-model"}} {tokens}',
                f'vllm:request_prefill_time_seconds_sum{{model_name="fake-model"}} {seconds}',
            ]
        return ("\n".join(lines) + "\n").encode()


class Connection(asyncio.Protocol):
    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: asyncio.Queue[tuple[str, dict[str, str], bytes] | None] = asyncio.Queue()
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = b""
        self.worker: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.worker = asyncio.get_running_loop().create_task(self.serve())

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def drain(self) -> None:
        """Wait while the peer does not read (as a real server does), without blocking the other connections."""
        await self.writable.wait()
        await asyncio.sleep(0)

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        self.queue.put_nowait(None)
        if self.worker is not None:
            self.worker.cancel()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        path = httptools.parse_url(self.url).path.decode()
        self.queue.put_nowait((path, self.headers, self.body))

    # ------------------------------------------------------------------ writing
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def abort(self, reset: bool = False) -> None:
        if self.transport is None:
            return
        if reset:  # SO_LINGER 0: the close sends a TCP RST, as a crashed peer's kernel does
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def head(self, status: int, ctype: str, extra: dict[str, str] | None = None, length: int | None = None) -> None:
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ''}",
            f"Content-Type: {ctype}",
        ]
        lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
        for k, v in (extra or {}).items():
            lines.append(f"{k}: {v}")
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def whole(
        self, status: int, body: bytes, ctype: str = "application/json", extra: dict[str, str] | None = None
    ) -> None:
        self.head(status, ctype, extra, len(body))
        self.write(body)

    def chunk(self, data: bytes) -> None:
        self.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunks(self) -> None:
        self.write(b"0\r\n\r\n")

    # ------------------------------------------------------------------ serving
    async def serve(self) -> None:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            await self.handle(*item)

    async def handle(self, path: str, headers: dict[str, str], body: bytes) -> None:
        fake, b = self.fake, self.fake.behaviour
        if path == "/health":
            if fake.draining:
                return self.whole(503, b'{"ok":false,"draining":true}')
            return self.whole(int(b["health_status"]), b'{"ok":true}')
        if path == "/metrics":
            return self.whole(200, fake.metrics(), "text/plain")
        if path == "/_control":
            b.update(json.loads(body or b"{}"))
            return self.whole(200, json.dumps(b).encode())
        if path == "/_reset":
            fake.behaviour = dict(DEFAULTS)
            fake.record.clear()
            fake.served = 0
            return self.whole(200, b"{}")
        if path == "/_record":
            return self.whole(200, json.dumps({"requests": fake.record, "served": fake.served}).encode())
        if path == "/v1/models":
            return self.whole(
                200,
                json.dumps(
                    {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": fake.name}]}
                ).encode(),
            )
        if path in ("/v1/chat/completions", "/v1/completions", "/beta/chat/completions"):
            if fake.draining:  # as our server and a draining vLLM do: no new work, try another instance
                return self.whole(
                    503,
                    b'{"error":{"message":"draining","type":"x","param":null,"code":"shutting_down"}}',
                    extra={"Retry-After": "1"},
                )
            fake.in_flight += 1
            try:
                await self.completion(path, headers, body)
            finally:
                fake.in_flight -= 1
            return None
        return self.whole(404, b'{"error":{"message":"not found"}}')

    async def completion(self, path: str, headers: dict[str, str], body: bytes) -> None:
        fake, b = self.fake, self.fake.behaviour
        try:
            data = json.loads(body)
        except ValueError:
            data = {"_raw": body.decode("latin-1")}
        fake.record.append({"path": path, "headers": headers, "body": data})
        if b["delay"]:
            await asyncio.sleep(b["delay"])
        if b["fail_next"] > 0:
            b["fail_next"] -= 1
            if b["fail_mode"] == "reset":
                return self.abort(reset=True)
            return self.status()
        if b["redirect_to"]:
            return self.whole(307, b"{}", extra={"Location": b["redirect_to"]})
        prefix = self.prefix_of(path, data)
        if prefix is False:
            return None
        mode = b["mode"]
        if mode == "status":
            return self.status()
        if mode == "reset":
            return self.abort(reset=True)
        if mode == "malformed":
            return self.whole(200, b'{"id": "x", "choices": [ this is not json')
        if mode == "braces":  # shaped like a JSON object, but not JSON
            return self.whole(200, b'{"id": "x", "choices": [oops]}')
        if mode == "context_length":
            return self.whole(
                400,
                json.dumps(
                    {"error": {"message": CONTEXT_MESSAGE, "type": "BadRequestError", "param": None, "code": 400}}
                ).encode(),
            )
        if mode == "endless":
            self.head(200, "application/json")
            while self.transport is not None and not self.transport.is_closing():
                self.chunk(b'{"pad": "' + b"x" * 65536 + b'"')
                await self.drain()
            return None
        model = data.get("model", "fake-model")
        parts = fake.parts(data)
        if prefix is not None:  # continue the stand-in's answer where the given text ends
            done = next((k for k in range(len(parts) + 1) if "".join(parts[:k]) == prefix), None)
            if done is None and b["foreign_prefix"] == "continue":  # as the API does: go on from any text
                done = 0
            if done is None:
                return self.whole(
                    400,
                    json.dumps(
                        {
                            "error": {
                                "message": f"prefix {prefix!r} is not how this answer starts",
                                "type": "invalid_request_error",
                                "param": None,
                                "code": None,
                            }
                        }
                    ).encode(),
                )
            parts = parts[done:]
        if data.get("stream"):
            return await self.stream(data, model, parts)
        finish = "content_filter" if mode == "content_filter" else "stop"
        text = "".join(parts) if b["text"] is not None or prefix is not None else f"answer from {fake.name}"
        if mode == "content_filter":
            text = ""
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if b["reasoning"]:
            message[b["reasoning_field"]] = f"thinking in {fake.name}"
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
        if path == "/v1/completions":
            choice = {"index": 0, "text": text, "finish_reason": finish}
        fake.served += 1
        fake.ttft_seconds += float(b["delay"])
        self.whole(
            200,
            json.dumps(
                {
                    "id": f"cmpl-{fake.name}-{fake.served}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [choice],
                    "usage": b["usage"] or {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                }
            ).encode(),
            b["content_type"],
            extra=b["headers"],
        )

    def prefix_of(self, path: str, data: dict[str, Any]) -> str | None | bool:
        """The assistant prefix of a chat prefix completion, None for a plain request, False once refused."""
        messages = data.get("messages") or []
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        if not last.get("prefix"):
            return None
        refusal = None
        if path != "/beta/chat/completions":
            refusal = "chat prefix completion is a beta feature: use base_url https://api.deepseek.com/beta"
        elif last.get("role") != "assistant":
            refusal = "the last message of a prefix completion must be the assistant's"
        elif self.fake.behaviour["refuse_prefix"]:
            refusal = "chat prefix completion is not available for this model"
        if refusal is not None:
            self.whole(
                400,
                json.dumps(
                    {
                        "error": {
                            "message": refusal,
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "invalid_request_error",
                        }
                    }
                ).encode(),
            )
            return False
        return str(last.get("content") or "")

    def status(self) -> None:
        b = self.fake.behaviour
        extra = {"Retry-After": str(b["retry_after"])} if b["retry_after"] is not None else {}
        extra.update(b["headers"])
        self.whole(
            int(b["status"]),
            json.dumps(
                {
                    "error": {
                        "message": b["status_message"] or f"{self.fake.name} says {b['status']}",
                        "type": "x",
                        "param": None,
                        "code": None,
                    }
                }
            ).encode(),
            extra=extra,
        )

    async def stream(self, data: dict[str, Any], model: str, parts: list[str]) -> None:
        fake, b = self.fake, self.fake.behaviour
        mode = b["mode"]
        self.head(200, "text/event-stream", b["headers"])
        delay = float(b["first_token_delay"])
        if b["prefill_tokens_per_s"]:
            tokens = prompt_tokens(data)
            delay = tokens / float(b["prefill_tokens_per_s"])
            fake.prompt_tokens_total += tokens
            fake.prefill_seconds += delay
        if delay:
            await asyncio.sleep(delay)
        fake.ttft_seconds += delay + float(b["delay"])
        if b["sse_preamble"]:
            self.chunk(b["sse_preamble"].encode())
        cut_after = b["cut_after"] if b["cut_after"] is not None else len(parts) // 2 + 1
        if mode == "cut_stream" and not parts:
            return self.abort()
        sid = f"chunk-{fake.name}"
        for i, part in enumerate(parts):
            if i == cut_after and mode in ("cut_stream", "stall", "malformed_chunk"):
                if mode == "cut_stream":
                    return self.abort()
                if mode == "stall":
                    await asyncio.sleep(3600)
                self.chunk(b'data: {"id": "x", "choices": [{"delta": \n\n')
                mode = "ok"
            delta: dict[str, Any] = {"content": part}
            if i == 0:
                delta["role"] = "assistant"
                if b["reasoning"]:
                    delta[b["reasoning_field"]] = f"thinking in {fake.name}"
            event = {
                "id": sid,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
            self.chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
            if b["chunk_delay"]:
                await asyncio.sleep(b["chunk_delay"])
            await self.drain()
        finish = "content_filter" if mode == "content_filter" else "stop"
        tail = [
            {
                "id": sid,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            }
        ]
        if (data.get("stream_options") or {}).get("include_usage"):
            n = len(parts)
            tail.append(
                {
                    "id": sid,
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [],
                    "usage": b["usage"] or {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n},
                }
            )
        fake.served += 1
        if mode == "silent_after_finish":  # the finish_reason event, then nothing (a frozen engine)
            self.chunk(b"data: " + json.dumps(tail[0]).encode() + b"\n\n")
            await self.drain()
            await asyncio.sleep(3600)
        text = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in tail)
        self.chunk(text if mode == "no_done" else text + b"data: [DONE]\n\n")
        self.end_chunks()


def _split(text: str, n: int) -> list[str]:
    """``text`` in ``n`` pieces at word boundaries (each piece keeps its trailing space)."""
    words = text.split(" ")
    size = max(1, -(-len(words) // max(1, n)))
    pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    out = [p + (" " if i < len(pieces) - 1 else "") for i, p in enumerate(pieces)]
    return [p for p in out if p]


async def serve(name: str, port: int, behaviour: dict[str, Any]) -> None:
    fake = FakeUpstream(name)
    fake.behaviour.update(behaviour)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(fake), "127.0.0.1", port, reuse_address=True)
    done = asyncio.Event()

    async def drain() -> None:  # SIGTERM, as a pod in a rollout gets it: finish what is open, then exit
        fake.draining = True
        while fake.in_flight:
            await asyncio.sleep(0.02)
        await asyncio.sleep(float(fake.behaviour.get("drain_linger_s", 0.3)))  # the last answers go out
        done.set()

    loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(drain()))
    await server.start_serving()
    await done.wait()
    os._exit(0)  # as a process exits: the kernel closes its sockets (the router's keep-alive ones too)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="upstream")
    parser.add_argument("--behaviour", default="{}", help="JSON: the behaviour to start with")
    args = parser.parse_args()
    behaviour = json.loads(args.behaviour)
    try:
        import uvloop

        uvloop.run(serve(args.name, args.port, behaviour))
    except ImportError:
        asyncio.run(serve(args.name, args.port, behaviour))


if __name__ == "__main__":
    main()
