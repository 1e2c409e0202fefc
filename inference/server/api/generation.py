"""From a validated request to engine work and back: model name check, limits, sampling params, submitting,
and reading the generation's events with backstops of the HTTP side's own (a deadline, a dead engine, a
client that went away), so that no request waits forever on an engine that cannot answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from starlette.requests import Request

from ..engine.sampling import SamplingParams
from ..engine.scheduler import EngineClosedError, EngineFailedError, QueueFullError
from ..engine.sequence import GenerationEvent, GenerationHandle
from ..runtime import Runtime
from .errors import APIError
from .prompts import context_exceeded
from .schemas import SamplingFields

RETRY_AFTER_S = "1"
POLL_S = 0.5  # how often a waiting request checks its backstops (and a non-streaming one its client)

# HTTP status of each way the engine can end a request with an error event
ERROR_STATUS = {"shutting_down": 503, "engine_failed": 500, "generation_failed": 500}
TIMEOUT_MESSAGE = "the request took longer than the server's request timeout"


def check_model(runtime: Runtime, model: str | None) -> None:
    name = runtime.loaded.served_model_name
    if model is not None and model != name:
        raise APIError(
            404, f"the model '{model}' does not exist; this server serves '{name}'", "model", "model_not_found"
        )


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """The OpenAI ``usage`` object of an answer."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sampling_params(
    runtime: Runtime, body: SamplingFields, prompt_ids: list[int], prompt_param: str, max_tokens: int | None = None
) -> SamplingParams:
    limit = runtime.loaded.max_model_len
    if len(prompt_ids) >= limit:
        raise context_exceeded(prompt_param, len(prompt_ids), limit)
    room = limit - len(prompt_ids)
    wanted, param = (max_tokens, "max_tokens") if max_tokens is not None else body.token_limit()
    if wanted is not None and wanted > room:
        if param not in body.model_fields_set:
            wanted = room  # a default (completions' 16) shrinks to the room left; only a value sent is an error
        else:
            raise APIError(
                400,
                f"'{param}' is {wanted}, but the prompt uses {len(prompt_ids)} of the "
                f"{limit}-token context; at most {room} allowed",
                param,
                "context_length_exceeded",
            )
    return SamplingParams(
        max_tokens=wanted or room,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=list(body.stop or []),
        ignore_eos=body.ignore_eos,
    )


def submit(runtime: Runtime, prompt_ids: list[int], params: SamplingParams) -> GenerationHandle:
    try:
        return runtime.engine.submit(prompt_ids, params, runtime.config.request_timeout)
    except QueueFullError as exc:
        raise APIError(429, f"{exc}; retry later", None, "queue_full", {"Retry-After": RETRY_AFTER_S}) from exc
    except EngineClosedError as exc:
        raise APIError(503, str(exc), None, "shutting_down", {"Retry-After": RETRY_AFTER_S}) from exc
    except EngineFailedError as exc:
        raise APIError(503, str(exc), None, "engine_failed") from exc


def event_error(event: GenerationEvent) -> tuple[int, str, str] | None:
    """``(status, message, code)`` of an event that ends a request unsuccessfully, else None."""
    if event.kind == "error":
        return ERROR_STATUS.get(event.code, 500), event.message, event.code or "generation_failed"
    if event.finish_reason == "timeout":
        return 504, TIMEOUT_MESSAGE, "request_timeout"
    if event.finish_reason == "cancelled":
        return 499, "the request was cancelled", "client_closed"
    return None


async def watched_events(
    runtime: Runtime, handle: GenerationHandle, request: Request | None = None
) -> AsyncIterator[GenerationEvent]:
    """The handle's events up to the final one. Backstops: past the request deadline plus
    ``runtime.backstop_s`` (the engine enforces the deadline only between its steps) the generation is
    cancelled and a timeout ends it; a dead engine ends it with ``engine_failed``; with ``request`` (a
    non-streaming request; Starlette watches streaming ones) a client that went away cancels it."""
    backstop = handle.deadline + runtime.backstop_s if handle.deadline is not None else None
    checked = time.monotonic()
    try:
        while True:
            event = handle.poll()  # no timer and task per event when the step's events are already here
            if event is None:
                try:
                    event = await asyncio.wait_for(handle.next_event(), timeout=POLL_S)
                except TimeoutError:
                    event = None
            if event is not None:
                yield event
                if event.terminal:
                    return
            now = time.monotonic()
            if now - checked < POLL_S:
                continue
            checked = now
            if request is not None and await request.is_disconnected():
                handle.cancel()
                raise APIError(499, "client disconnected", None, "client_closed")
            if not runtime.engine.alive:
                yield GenerationEvent(
                    "error",
                    message=f"the engine failed ({runtime.engine.failure}); retry on another server",
                    code="engine_failed",
                )
                return
            if backstop is not None and now > backstop:
                yield GenerationEvent("finish", finish_reason="timeout", prompt_tokens=handle.prompt_tokens)
                return
    finally:
        handle.release()


async def collect(runtime: Runtime, request: Request, handle: GenerationHandle) -> tuple[str, GenerationEvent]:
    """Wait for the whole answer; an error or timeout becomes an APIError with its own status."""
    parts: list[str] = []
    async for event in watched_events(runtime, handle, request):
        if event.kind == "delta":
            parts.append(event.text)
            continue
        failed = event_error(event)
        if failed is not None:
            status, message, code = failed
            raise APIError(status, message, None, code)
        return "".join(parts), event
    raise APIError(500, "the generation ended without a final event", None, "generation_failed")
