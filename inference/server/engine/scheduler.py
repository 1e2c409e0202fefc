"""The engine: a background thread that batches every active sequence into one forward pass per token.

Requests wait in a bounded queue; each iteration admits as many as there are free slots
(``max_num_seqs``), prefills them together, merges them into the running batch, and then decodes one
token for every running sequence in a single forward pass (continuous batching: sequences join and
leave between steps). Cancelled or timed-out sequences leave at the next step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .kv_batch import KVBatch
from .prefix_cache import PrefixCache, PrefixHit
from .sampling import SamplingParams, choose_token, is_greedy
from .sequence import GenerationEvent, GenerationHandle, Outbox, Sequence

if TYPE_CHECKING:  # the engine itself needs only torch and transformers
    from ..metrics import ServerMetrics

log = logging.getLogger(__name__)


def known_input(seq: Sequence) -> int:
    """The token a running sequence feeds its next decode step (set when its prefill ends)."""
    assert seq.next_input is not None, "a running sequence has its next input"
    return seq.next_input


class QueueFullError(RuntimeError):
    """The waiting queue is at ``max_queue``: answer 429 at once."""


class EngineClosedError(RuntimeError):
    """The engine is draining or stopped: answer 503."""


class EngineFailedError(RuntimeError):
    """The engine thread died: answer 503 (the pod's liveness probe restarts the server)."""


@dataclass(frozen=True)
class EngineLimits:
    max_num_seqs: int
    max_queue: int
    max_model_len: int
    prefill_token_budget: int = 8192  # padded prompt tokens per prefill forward pass (a longer prompt goes alone)
    prefix_cache_tokens: int = 4096  # prompt-prefix KV kept for reuse (0: off)


class Engine:
    def __init__(
        self, model, tokenizer, limits: EngineLimits, eos_ids: set[int], pad_id: int, metrics: ServerMetrics
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.limits = limits
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.metrics = metrics
        self.prefix_cache = PrefixCache(limits.prefix_cache_tokens) if limits.prefix_cache_tokens > 0 else None
        self._pending: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        # Admitted but not yet in the running batch (being prefilled): they hold batch slots, so the queue
        # limit counts them; a request arriving during a long prefill must not slip past max_queue.
        self._prefilling: list[Sequence] = []
        self._batch: KVBatch | None = None
        self._outbox = Outbox()  # events of the current step, delivered once per step
        self.decode_steps = 0  # decode forward passes so far, and the seconds they took (scheduler included)
        self.decode_seconds = 0.0
        self._cond = threading.Condition()
        self._accepting = True
        self._stop = False
        self.failure: str | None = None  # why the engine thread died, once it has
        self._thread = threading.Thread(target=self._run, name="dsdeploy-engine", daemon=True)

    # ---- asyncio side -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        """The engine thread runs (or has not been started yet) and has not failed."""
        started = self._thread.ident is not None
        return self.failure is None and (not started or self._thread.is_alive() or self._stop)

    @property
    def num_waiting(self) -> int:
        return len(self._pending)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def idle(self) -> bool:
        return not self._pending and not self._running

    def submit(self, prompt_ids: list[int], params: SamplingParams, timeout_s: float | None) -> GenerationHandle:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        deadline = time.monotonic() + timeout_s if timeout_s else None
        sequence = Sequence(prompt_ids, params, self.tokenizer, deadline, loop, queue, self._outbox)
        with self._cond:
            if self.failure is not None:
                raise EngineFailedError(f"the engine has failed ({self.failure}); the server must be restarted")
            if not self._accepting:
                raise EngineClosedError("the server is shutting down")
            # at most max_queue requests wait beyond the max_num_seqs batch slots
            held = len(self._pending) + len(self._running) + len(self._prefilling)
            if held >= self.limits.max_num_seqs + self.limits.max_queue:
                self.metrics.rejected.labels(reason="queue_full").inc()
                raise QueueFullError(f"the request queue is full ({self.limits.max_queue} waiting)")
            self._pending.append(sequence)
            self.metrics.set_queue(len(self._running), len(self._pending))
            self._cond.notify()
        return GenerationHandle(sequence, queue)

    def stop_accepting(self) -> None:
        with self._cond:
            self._accepting = False

    def abort_open(self, message: str, code: str) -> int:
        """From any thread: end every queued and running request now with an error event (``code``), without
        waiting for the engine thread (it may be in a long step, or dead). Returns how many were ended."""
        with self._cond:
            open_ = [seq for seq in [*self._running, *self._prefilling, *self._pending] if not seq.finished]
            for seq in open_:
                seq.abort(GenerationEvent("error", message=message, code=code))
            self._cond.notify()
        return len(open_)

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._accepting = False
            self._stop = True
            self._cond.notify()
        if self._thread.ident is not None:
            self._thread.join(timeout=timeout)

    # ---- engine thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the engine is gone: say so, and let nobody wait for it
            self.failure = type(exc).__name__
            self.metrics.ready.set(0)
            log.critical("the engine thread died; open requests fail and /health reports it", exc_info=exc)
            self.abort_open(f"the engine failed ({self.failure}); retry on another server", "engine_failed")

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not self._pending and not self._running and not self._stop:
                    self._cond.wait()
                if self._stop:
                    break
            try:
                self._step()
            except Exception as exc:  # a failed step (forward pass, scheduling) fails its requests, not the server
                log.exception("engine step failed")
                self._fail_all(f"generation failed: {type(exc).__name__}", "generation_failed")
            self._outbox.flush()
        self._fail_all("the server is shutting down", "shutting_down")
        self._outbox.flush()

    def _step(self) -> None:
        with self._cond:
            admitted = self._admit()
        self._reap()
        self._outbox.flush()  # sequences that timed out or were cancelled hear it before a long prefill
        if admitted:
            self._prefill(admitted)
        if self._running:
            self._decode()
        self._update_gauges()

    def _admit(self) -> list[Sequence]:
        """Under the lock: move what fits from the queue to ``_prefilling`` (and return it)."""
        admitted: list[Sequence] = []
        free = self.limits.max_num_seqs - len(self._running)
        now = time.monotonic()
        while self._pending and len(admitted) < free:
            seq = self._pending.popleft()
            if seq.cancelled:
                self._finish(seq, "cancelled")
            elif seq.deadline is not None and now > seq.deadline:
                self._finish(seq, "timeout")
            else:
                seq.admitted_at = now
                self.metrics.queue_time.observe(now - seq.arrival)
                admitted.append(seq)
        # sequences still waiting can also be cancelled or time out
        for seq in [s for s in self._pending if s.cancelled or (s.deadline and now > s.deadline)]:
            self._pending.remove(seq)
            self._finish(seq, "cancelled" if seq.cancelled else "timeout")
        self._prefilling = list(admitted)
        return admitted

    def _reap(self) -> None:
        now = time.monotonic()
        keep = []
        for row, seq in enumerate(self._running):
            if seq.cancelled:
                self._finish(seq, "cancelled")
            elif seq.deadline is not None and now > seq.deadline:
                self._finish(seq, "timeout")
            else:
                keep.append(row)
        self._keep_rows(keep)

    def _prefill(self, admitted: list[Sequence]) -> None:
        admitted.sort(key=lambda s: len(s.prompt_ids))
        groups: list[list[Sequence]] = [[]]
        for seq in admitted:  # sorted by length, so the last one sets the padded width
            group = groups[-1]
            if group and (len(group) + 1) * len(seq.prompt_ids) > self.limits.prefill_token_budget:
                groups.append([])
            groups[-1].append(seq)
        # Prefill before decoding (the best p99 time to first token); chunks keep each forward pass
        # bounded and let each chunk's first tokens go out as soon as it is done.
        for group in groups:
            try:
                self._prefill_group(group)
            finally:  # merged into the batch, finished or failed: no longer held by the prefill
                done = {id(seq) for seq in group}
                with self._cond:
                    self._prefilling = [seq for seq in self._prefilling if id(seq) not in done]

    def _prefill_group(self, group: list[Sequence]) -> None:
        prompts = [s.prompt_ids for s in group]
        hits = [self._lookup_prefix(p) for p in prompts] if self.prefix_cache else None
        try:
            batch, logits = KVBatch.prefill(self.model, prompts, self.pad_id, hits)
        except Exception as exc:
            log.exception("prefill failed")
            for seq in group:
                self._fail(seq, f"prefill failed: {type(exc).__name__}", "generation_failed")
            self._outbox.flush()
            return
        self.metrics.prompt_tokens.inc(sum(len(p) for p in prompts))
        if self.prefix_cache is not None:
            for row, prompt in enumerate(prompts):
                if not self.prefix_cache.contains(prompt):
                    self.prefix_cache.store(prompt, batch.row_kv(row))
        greedy = self._greedy(logits, group)
        keep = [row for row, seq in enumerate(group) if self._accept(seq, logits, row, greedy[row])]
        self._outbox.flush()  # this chunk's first tokens go out now, before the next chunk's prefill
        if not keep:
            return
        if len(keep) < len(group):
            batch.select(keep)
        group = [group[row] for row in keep]
        if self._batch is None:
            self._batch, self._running = batch, group
        else:
            self._batch.merge(batch)
            self._running.extend(group)

    def _lookup_prefix(self, prompt: list[int]) -> PrefixHit | None:
        assert self.prefix_cache is not None
        hit = self.prefix_cache.lookup(prompt)
        self.metrics.prefix_queries.inc(len(prompt))
        if hit is not None:
            self.metrics.prefix_hits.inc(hit.length)
        return hit

    def _decode(self) -> None:
        assert self._batch is not None
        started = time.perf_counter()
        self.metrics.decode_batch_size.observe(len(self._running))
        logits = self._batch.decode(self.model, [known_input(s) for s in self._running])
        greedy = self._greedy(logits, self._running)
        keep = [row for row, seq in enumerate(self._running) if self._accept(seq, logits, row, greedy[row])]
        self._keep_rows(keep)
        self.decode_steps += 1
        self.decode_seconds += time.perf_counter() - started

    def _keep_rows(self, keep: list[int]) -> None:
        if len(keep) == len(self._running):
            return
        self._running = [self._running[row] for row in keep]
        if not keep:
            self._batch = None
        elif self._batch is not None:
            self._batch.select(keep)

    @staticmethod
    def _greedy(logits: torch.Tensor, sequences: list[Sequence]) -> list[int | None]:
        """Argmax of every row in one device round trip (for the greedy rows)."""
        if not any(is_greedy(s.params) for s in sequences):
            return [None] * len(sequences)
        return logits.argmax(dim=-1).tolist()

    def _accept(self, seq: Sequence, logits: torch.Tensor, row: int, greedy: int | None) -> bool:
        """Take one token for ``seq`` (row ``row`` of ``logits``); emit its text; return False when the
        sequence is finished. Greedy rows do not touch ``logits`` (no per-row tensor op)."""
        if greedy is not None and is_greedy(seq.params):
            token = greedy
        else:
            token = choose_token(logits[row], seq.params, seq.generator)
        now = time.monotonic()
        if seq.last_token_at is None:
            self.metrics.ttft.observe(now - seq.arrival)
            seq.first_token_at = now
        else:
            self.metrics.observe_inter_token(now - seq.last_token_at)
        seq.last_token_at = now
        seq.generated.append(token)
        self.metrics.generation_tokens.inc()
        if token in self.eos_ids and not seq.params.ignore_eos:
            self._finish(seq, "stop")
            return False
        delta = seq.text.push(token)
        if delta:
            seq.emit(GenerationEvent("delta", text=delta))
        if seq.text.stopped:
            self._finish(seq, "stop")
            return False
        if len(seq.generated) >= seq.params.max_tokens or (
            len(seq.prompt_ids) + len(seq.generated) >= self.limits.max_model_len
        ):
            self._finish(seq, "length")
            return False
        seq.next_input = token
        return True

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.finished = True
        tail = seq.text.finish()
        if tail and reason in ("stop", "length", "timeout"):
            seq.emit(GenerationEvent("delta", text=tail))
        decode_s = seq.last_token_at - seq.first_token_at if seq.first_token_at and seq.last_token_at else 0.0
        self.metrics.request_finished(
            reason, len(seq.prompt_ids), len(seq.generated), time.monotonic() - seq.arrival, decode_s
        )
        seq.emit(
            GenerationEvent(
                "finish", finish_reason=reason, prompt_tokens=len(seq.prompt_ids), completion_tokens=len(seq.generated)
            )
        )

    def _fail(self, seq: Sequence, message: str, code: str) -> None:
        seq.finished = True
        self.metrics.request_finished("error", len(seq.prompt_ids), len(seq.generated), 0.0, 0.0)
        seq.emit(GenerationEvent("error", message=message, code=code))

    def _fail_all(self, message: str, code: str) -> None:
        for seq in self._running:
            self._fail(seq, message, code)
        self._running, self._batch = [], None
        with self._cond:
            pending, self._pending = list(self._pending), deque()
            pending += [seq for seq in self._prefilling if not seq.finished]  # a step that failed mid-prefill
            self._prefilling = []
        for seq in pending:
            self._fail(seq, message, code)

    def _update_gauges(self) -> None:
        self.metrics.set_queue(len(self._running), len(self._pending))
        capacity = self.limits.max_num_seqs * self.limits.max_model_len
        used = self._batch.size * self._batch.width if self._batch is not None else 0
        self.metrics.kv_cache_usage.set(min(1.0, used / capacity) if capacity else 0.0)
