"""The engine hands a step's events to the event loop in one wake-up, in order, and drops them quietly
when the loop is gone."""

from __future__ import annotations

import asyncio
import threading

from inference.server.engine.sequence import GenerationEvent, Outbox


def test_outbox_delivers_a_steps_events_in_order_with_one_wakeup_per_loop():
    async def scenario() -> tuple[list[list[str]], int]:
        loop = asyncio.get_running_loop()
        queues = [asyncio.Queue(), asyncio.Queue()]
        outbox = Outbox()
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(callback, *args):
            nonlocal wakeups
            wakeups += 1
            return original(callback, *args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]

        def engine_step() -> None:  # the engine thread: two tokens for each of two sequences, then finish
            for text in ("a", "b"):
                for row, queue in enumerate(queues):
                    outbox.put(loop, queue, GenerationEvent("delta", text=f"{row}{text}"))
            for queue in queues:
                outbox.put(loop, queue, GenerationEvent("finish", finish_reason="stop"))
            assert all(q.empty() for q in queues)  # nothing is delivered before the flush
            outbox.flush()
            outbox.flush()  # an empty flush wakes nobody

        thread = threading.Thread(target=engine_step)
        thread.start()
        thread.join()  # the loop does not run meanwhile: everything arrives after the flush
        seen = []
        for queue in queues:
            events = []
            while True:
                event = await asyncio.wait_for(queue.get(), 5)
                events.append(event.text or event.kind)
                if event.kind == "finish":
                    break
            seen.append(events)
        return seen, wakeups

    seen, wakeups = asyncio.run(scenario())
    assert seen == [["0a", "0b", "finish"], ["1a", "1b", "finish"]]
    assert wakeups == 1


def test_outbox_flush_after_the_loop_closed_does_not_raise():
    loop = asyncio.new_event_loop()
    queue: asyncio.Queue = asyncio.Queue()
    loop.close()
    outbox = Outbox()
    outbox.put(loop, queue, GenerationEvent("delta", text="late"))
    outbox.flush()  # the server is shutting down: nobody is listening
    assert queue.empty()
