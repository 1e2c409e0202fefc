"""One generation request as the engine thread sees it, and its handle on the asyncio side."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .sampling import SamplingParams, make_generator
from .text_stream import TextStream

_ids = itertools.count(1)


@dataclass(frozen=True)
class GenerationEvent:
    """``delta``: new text; ``finish``: done (finish_reason stop/length/timeout/cancelled); ``error``: ended by
    the server, ``code`` says why (``generation_failed``: a failed forward pass; ``engine_failed``: the engine
    thread died; ``shutting_down``: the drain grace is over or the engine stopped)."""

    kind: str
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    message: str = ""
    code: str = ""

    @property
    def terminal(self) -> bool:
        return self.kind != "delta"


class Outbox:
    """Events the engine thread produced during one step, handed to their event loops with one wake-up
    per loop at ``flush`` (not one per token per sequence: each ``call_soon_threadsafe`` writes to the
    loop's wake-up socket and makes the loop thread compete for the GIL with the engine thread).
    Events keep their order. Only the engine thread uses it."""

    def __init__(self) -> None:
        self._events: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, GenerationEvent]]] = {}

    def put(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, event: GenerationEvent) -> None:
        self._events.setdefault(loop, []).append((queue, event))

    def flush(self) -> None:
        events, self._events = self._events, {}
        for loop, batch in events.items():
            # RuntimeError: the event loop is gone (server shutting down); nobody is listening
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, batch)


def _deliver(batch: list[tuple[asyncio.Queue, GenerationEvent]]) -> None:
    for queue, event in batch:
        queue.put_nowait(event)


class Sequence:
    """State of one request inside the engine. Only the engine thread mutates it, except ``cancelled``."""

    def __init__(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        tokenizer,
        deadline: float | None,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue,
        outbox: Outbox | None = None,
    ) -> None:
        self.id = next(_ids)
        self.prompt_ids = prompt_ids
        self.params = params
        self.generated: list[int] = []
        self.text = TextStream(tokenizer, params.stop)
        self.generator = make_generator(params.seed)
        self.deadline = deadline
        self.arrival = time.monotonic()
        self.admitted_at: float | None = None
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.next_input: int | None = None
        self.finished = False
        self.cancelled = False
        self._loop = loop
        self._queue = queue
        self._outbox = outbox

    def emit(self, event: GenerationEvent) -> None:
        """Send an event to the handle: through the outbox (delivered at its next flush) if there is one."""
        if self._outbox is not None:
            self._outbox.put(self._loop, self._queue, event)
            return
        # RuntimeError: the event loop is gone (server shutting down); nobody is listening
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def abort(self, event: GenerationEvent) -> None:
        """From any thread: end the request now with ``event``, delivered at once (not through the engine's
        outbox, so it does not wait for a step); the engine drops the sequence at its next step, and what
        it still emits for it arrives after ``event`` and is never read."""
        self.cancelled = True
        with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)


class GenerationHandle:
    """What a route holds: iterate the events, or cancel (client gone)."""

    def __init__(self, sequence: Sequence, queue: asyncio.Queue) -> None:
        self._sequence = sequence
        self._queue = queue
        self.prompt_tokens = len(sequence.prompt_ids)
        self.deadline = sequence.deadline

    def cancel(self) -> None:
        self._sequence.cancelled = True

    async def next_event(self) -> GenerationEvent:
        return await self._queue.get()

    def poll(self) -> GenerationEvent | None:
        """The next event if one is already there (a step delivers its events together), else None."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def events(self) -> AsyncIterator[GenerationEvent]:
        """Yield events up to and including the final ``finish`` or ``error``; cancel if abandoned."""
        try:
            while True:
                event = await self._queue.get()
                yield event
                if event.terminal:
                    return
        finally:
            self.release()

    def release(self) -> None:
        """The caller stops reading: cancel the generation unless it is over."""
        if not self._sequence.finished:
            self.cancel()
