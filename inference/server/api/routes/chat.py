"""POST /v1/chat/completions"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request

from ...reasoning import ThinkSplitter, prompt_opens_thinking
from ..body import read_body, value_limit
from ..errors import sse_error
from ..generation import check_model, collect, event_error, sampling_params, submit, usage, watched_events
from ..schemas import ChatCompletionRequest
from ..streaming import sse, sse_response

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    runtime, prompts = request.app.state.runtime, request.app.state.prompts
    body = await read_body(
        request, ChatCompletionRequest, value_limit(runtime.loaded.max_model_len), prompts.precheck_chat
    )
    check_model(runtime, body.model)
    conversation = [{"role": message.role, "content": message.text()} for message in body.messages]
    prompt_text, prompt_ids = await prompts.chat(conversation)
    params = sampling_params(runtime, body, prompt_ids, "messages")
    reasoning = runtime.loaded.reasoning
    splitter = ThinkSplitter(prompt_opens_thinking(prompt_text)) if reasoning else None
    handle = submit(runtime, prompt_ids, params)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    model = runtime.loaded.served_model_name

    if not body.stream:
        text, final = await collect(runtime, request, handle)
        # "refusal" is required by the API's schema (null: the model did not refuse)
        message: dict = {"role": "assistant", "content": text, "refusal": None}
        if splitter is not None:
            r1, c1 = splitter.push(text)
            r2, c2 = splitter.finish()
            message = {"role": "assistant", "content": c1 + c2, "refusal": None, "reasoning_content": (r1 + r2) or None}
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": final.finish_reason, "logprobs": None}],
            "usage": usage(final.prompt_tokens, final.completion_tokens),
        }

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: dict, finish_reason: str | None = None) -> str:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        if include_usage:
            payload["usage"] = None
        return sse(payload)

    def deltas(reasoning_text: str, content: str) -> list[str]:
        out = []
        if reasoning_text:
            out.append(chunk({"reasoning_content": reasoning_text}))
        if content:
            out.append(chunk({"content": content}))
        return out

    async def stream() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        async for event in watched_events(runtime, handle):
            if event.kind == "delta":
                for piece in deltas(*(splitter.push(event.text) if splitter else ("", event.text))):
                    yield piece
                continue
            failed = event_error(event)
            if failed is not None:
                yield sse_error(*failed)
                return
            if splitter is not None:
                for piece in deltas(*splitter.finish()):
                    yield piece
            yield chunk({}, event.finish_reason)
            if include_usage:
                yield sse(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage(event.prompt_tokens, event.completion_tokens),
                    }
                )
            return

    return sse_response(stream())
