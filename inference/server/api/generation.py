"""From a validated request to engine work: model name check, prompt tokens, limits, sampling params,
and collecting a whole answer while watching for a client that goes away."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request

from ..engine.sampling import SamplingParams
from ..engine.scheduler import EngineClosedError, QueueFullError
from ..engine.sequence import GenerationEvent, GenerationHandle
from ..runtime import Runtime
from .errors import APIError
from .schemas import ChatCompletionRequest, SamplingFields

RETRY_AFTER_S = "1"
DISCONNECT_POLL_S = 0.5  # how often a waiting non-streaming request checks that its client is still there


def check_model(runtime: Runtime, model: str | None) -> None:
    name = runtime.loaded.served_model_name
    if model is not None and model != name:
        raise APIError(404, f"the model '{model}' does not exist; this server serves '{name}'", "model",
                       "model_not_found")


def chat_prompt(runtime: Runtime, body: ChatCompletionRequest) -> tuple[str, list[int]]:
    messages = []
    for i, message in enumerate(body.messages):
        try:
            messages.append({"role": message.role, "content": message.text()})
        except ValueError as exc:
            raise APIError(400, f"'messages.{i}.content': {exc}", f"messages.{i}.content", "invalid_value") from exc
    tokenizer = runtime.loaded.tokenizer
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # the model's Jinja template rejects this conversation
        raise APIError(400, f"'messages': the chat template rejected them: {exc}", "messages",
                       "invalid_value") from exc
    return text, tokenizer(text, add_special_tokens=False)["input_ids"]


def text_prompt(runtime: Runtime, prompt: str | list[int], param: str = "prompt") -> list[int]:
    if isinstance(prompt, list):
        vocab = len(runtime.loaded.tokenizer)
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise APIError(400, f"'{param}': token ids must be in [0, {vocab}), got {bad[0]}", param, "invalid_value")
        return list(prompt)
    if not prompt:
        raise APIError(400, f"'{param}' must not be empty", param, "invalid_value")
    return runtime.loaded.tokenizer(prompt)["input_ids"]


def sampling_params(runtime: Runtime, body: SamplingFields, prompt_ids: list[int], prompt_param: str,
                    max_tokens: int | None = None) -> SamplingParams:
    limit = runtime.loaded.max_model_len
    if len(prompt_ids) >= limit:
        raise APIError(400, f"'{prompt_param}' is {len(prompt_ids)} tokens; the context is {limit} tokens and "
                       "must leave room for at least one generated token", prompt_param, "context_length_exceeded")
    room = limit - len(prompt_ids)
    wanted = max_tokens if max_tokens is not None else body.max_tokens
    if wanted is not None and wanted > room:
        raise APIError(400, f"'max_tokens' is {wanted}, but the prompt uses {len(prompt_ids)} of the {limit}-token "
                       f"context; at most {room} allowed", "max_tokens", "context_length_exceeded")
    return SamplingParams(max_tokens=wanted or room, temperature=body.temperature, top_p=body.top_p,
                          seed=body.seed, stop=list(body.stop or []), ignore_eos=body.ignore_eos)


def submit(runtime: Runtime, prompt_ids: list[int], params: SamplingParams) -> GenerationHandle:
    try:
        return runtime.engine.submit(prompt_ids, params, runtime.config.request_timeout)
    except QueueFullError as exc:
        raise APIError(429, f"{exc}; retry later", None, "queue_full", {"Retry-After": RETRY_AFTER_S}) from exc
    except EngineClosedError as exc:
        raise APIError(503, str(exc), None, "shutting_down", {"Retry-After": RETRY_AFTER_S}) from exc


def raise_for_event(event: GenerationEvent) -> None:
    if event.kind == "error":
        raise APIError(500, event.message, None, "generation_failed")
    if event.finish_reason == "timeout":
        raise APIError(504, "the request took longer than the server's request timeout", None, "request_timeout")


async def collect(request: Request, handle: GenerationHandle) -> tuple[str, GenerationEvent]:
    """Wait for the whole answer; cancel the generation if the client disconnects meanwhile."""
    parts: list[str] = []
    checked = time.monotonic()
    try:
        while True:
            try:
                event = await asyncio.wait_for(handle.next_event(), timeout=DISCONNECT_POLL_S)
            except TimeoutError:
                event = None
            if time.monotonic() - checked >= DISCONNECT_POLL_S:
                checked = time.monotonic()
                if await request.is_disconnected():
                    handle.cancel()
                    raise APIError(499, "client disconnected", None, "client_closed")
            if event is None:
                continue
            if event.kind == "delta":
                parts.append(event.text)
                continue
            raise_for_event(event)
            return "".join(parts), event
    except asyncio.CancelledError:
        handle.cancel()
        raise
