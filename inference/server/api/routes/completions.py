"""POST /v1/completions and the original article's POST /generate."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request

from ..body import read_body, value_limit
from ..errors import sse_error
from ..generation import check_model, collect, event_error, sampling_params, submit, usage, watched_events
from ..schemas import CompletionRequest, GenerateRequest
from ..streaming import sse, sse_response

router = APIRouter()


@router.post("/v1/completions")
async def completions(request: Request):
    runtime, prompts = request.app.state.runtime, request.app.state.prompts
    body = await read_body(
        request, CompletionRequest, value_limit(runtime.loaded.max_model_len), prompts.precheck_prompt
    )
    check_model(runtime, body.model)
    prompt_ids = await prompts.text(body.prompt)
    params = sampling_params(runtime, body, prompt_ids, "prompt")
    handle = submit(runtime, prompt_ids, params)
    completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    model = runtime.loaded.served_model_name

    if not body.stream:
        text, final = await collect(runtime, request, handle)
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": final.finish_reason, "logprobs": None}],
            "usage": usage(final.prompt_tokens, final.completion_tokens),
        }

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(text: str, finish_reason: str | None = None) -> str:
        payload = {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}],
        }
        if include_usage:
            payload["usage"] = None
        return sse(payload)

    async def stream() -> AsyncIterator[str]:
        async for event in watched_events(runtime, handle):
            if event.kind == "delta":
                yield chunk(event.text)
                continue
            failed = event_error(event)
            if failed is not None:
                yield sse_error(*failed)
                return
            yield chunk("", event.finish_reason)
            if include_usage:
                yield sse(
                    {
                        "id": completion_id,
                        "object": "text_completion",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage(event.prompt_tokens, event.completion_tokens),
                    }
                )
            return

    return sse_response(stream())


@router.post("/generate")
async def generate(request: Request) -> dict:
    """The article's service: raw prompt in, generated text out (without the prompt)."""
    runtime, prompts = request.app.state.runtime, request.app.state.prompts
    body = await read_body(request, GenerateRequest, value_limit(runtime.loaded.max_model_len), prompts.precheck_prompt)
    prompt_ids = await prompts.text(body.prompt)
    room = runtime.loaded.max_model_len - len(prompt_ids)
    fields = CompletionRequest(
        prompt=body.prompt, temperature=body.temperature, max_tokens=max(1, min(body.max_tokens, room))
    )
    params = sampling_params(runtime, fields, prompt_ids, "prompt")
    text, _ = await collect(runtime, request, submit(runtime, prompt_ids, params))
    return {"response": text}
