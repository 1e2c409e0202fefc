"""POST /v1/completions and the original article's POST /generate."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from ..errors import sse_error
from ..generation import check_model, collect, sampling_params, submit, text_prompt
from ..schemas import CompletionRequest, GenerateRequest

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    runtime = request.app.state.runtime
    check_model(runtime, body.model)
    prompt_ids = text_prompt(runtime, body.prompt)
    params = sampling_params(runtime, body, prompt_ids, "prompt")
    handle = submit(runtime, prompt_ids, params)
    completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    model = runtime.loaded.served_model_name

    def usage(prompt: int, completion: int) -> dict:
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    if not body.stream:
        text, final = await collect(request, handle)
        return {"id": completion_id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": final.finish_reason, "logprobs": None}],
                "usage": usage(final.prompt_tokens, final.completion_tokens)}

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(text: str, finish_reason: str | None = None, final_usage: dict | None = None) -> str:
        payload = {"id": completion_id, "object": "text_completion", "created": created, "model": model,
                   "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}]}
        if final_usage is not None:
            payload["choices"], payload["usage"] = [], final_usage
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    async def stream() -> AsyncIterator[str]:
        async for event in handle.events():
            if event.kind == "delta":
                yield chunk(event.text)
            elif event.kind == "error" or event.finish_reason in ("timeout", "cancelled"):
                yield sse_error(event.message or f"generation ended: {event.finish_reason}", "generation_failed")
                break
            else:
                yield chunk("", event.finish_reason)
                if include_usage:
                    yield chunk("", None, usage(event.prompt_tokens, event.completion_tokens))
        yield "data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/generate")
async def generate(body: GenerateRequest, request: Request) -> dict:
    """The seed article's service: raw prompt in, generated text out (without the prompt)."""
    runtime = request.app.state.runtime
    prompt_ids = text_prompt(runtime, body.prompt)
    room = runtime.loaded.max_model_len - len(prompt_ids)
    fields = CompletionRequest(prompt=body.prompt, temperature=body.temperature,
                               max_tokens=max(1, min(body.max_tokens, room)))
    params = sampling_params(runtime, fields, prompt_ids, "prompt")
    text, _ = await collect(request, submit(runtime, prompt_ids, params))
    return {"response": text}
