"""POST /v1/chat/completions"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from ...reasoning import ThinkSplitter, prompt_opens_thinking
from ..errors import sse_error
from ..generation import chat_prompt, check_model, collect, sampling_params, submit
from ..schemas import ChatCompletionRequest

router = APIRouter()


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    runtime = request.app.state.runtime
    check_model(runtime, body.model)
    prompt_text, prompt_ids = chat_prompt(runtime, body)
    params = sampling_params(runtime, body, prompt_ids, "messages")
    reasoning = runtime.loaded.reasoning
    splitter = ThinkSplitter(prompt_opens_thinking(prompt_text)) if reasoning else None
    handle = submit(runtime, prompt_ids, params)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    model = runtime.loaded.served_model_name

    if not body.stream:
        text, final = await collect(request, handle)
        message: dict = {"role": "assistant", "content": text}
        if splitter is not None:
            r1, c1 = splitter.push(text)
            r2, c2 = splitter.finish()
            message = {"role": "assistant", "content": c1 + c2, "reasoning_content": (r1 + r2) or None}
        return {
            "id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": final.finish_reason, "logprobs": None}],
            "usage": _usage(final.prompt_tokens, final.completion_tokens),
        }

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: dict, finish_reason: str | None = None) -> str:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
        if include_usage:
            payload["usage"] = None
        return _sse(payload)

    def deltas(reasoning_text: str, content: str) -> list[str]:
        out = []
        if reasoning_text:
            out.append(chunk({"reasoning_content": reasoning_text}))
        if content:
            out.append(chunk({"content": content}))
        return out

    async def stream() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        async for event in handle.events():
            if event.kind == "delta":
                for piece in deltas(*(splitter.push(event.text) if splitter else ("", event.text))):
                    yield piece
                continue
            if event.kind == "error" or event.finish_reason in ("timeout", "cancelled"):
                code = "request_timeout" if event.finish_reason == "timeout" else "generation_failed"
                yield sse_error(event.message or f"generation ended: {event.finish_reason}", code)
                yield "data: [DONE]\n\n"
                return
            if splitter is not None:
                for piece in deltas(*splitter.finish()):
                    yield piece
            yield chunk({}, event.finish_reason)
            if include_usage:
                yield _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                            "model": model, "choices": [],
                            "usage": _usage(event.prompt_tokens, event.completion_tokens)})
            yield "data: [DONE]\n\n"
            return

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
