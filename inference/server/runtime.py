"""What the HTTP layer serves from: the loaded model, the engine, metrics, and the drain state."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from .config import ServerConfig
from .engine.scheduler import Engine, EngineLimits
from .loading import LoadedModel
from .metrics import ServerMetrics

log = logging.getLogger(__name__)

# After the drain grace (see serving.py): time for the last answers to go out, for uvicorn to close the
# connections, and for the engine thread to stop. The process exits at most drain_grace + 5 s after SIGTERM.
ANSWER_FLUSH_S = 2.0
CONNECTIONS_CLOSE_S = 2.0
ENGINE_STOP_S = 1.0
SHUTDOWN_AFTER_GRACE_S = ANSWER_FLUSH_S + CONNECTIONS_CLOSE_S + ENGINE_STOP_S


@dataclass
class Runtime:
    config: ServerConfig
    loaded: LoadedModel
    engine: Engine
    metrics: ServerMetrics
    draining: bool = False
    backstop_s: float = 5.0  # a waiting request gives up this long after its deadline if the engine has not ended it
    _inflight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, config: ServerConfig, loaded: LoadedModel) -> Runtime:
        metrics = ServerMetrics(loaded.served_model_name)
        metrics.weight_bytes.set(loaded.weight_bytes)
        metrics.max_num_seqs.set(config.max_num_seqs)
        metrics.max_queue.set(config.max_queue)
        prefill = config.max_prefill_tokens or (512 if loaded.device == "cpu" else 8192)
        limits = EngineLimits(
            max_num_seqs=config.max_num_seqs,
            max_queue=config.max_queue,
            max_model_len=loaded.max_model_len,
            prefill_token_budget=prefill,
            prefix_cache_tokens=config.prefix_cache_tokens,
        )
        engine = Engine(loaded.model, loaded.tokenizer, limits, loaded.eos_ids, loaded.pad_id, metrics)
        return cls(config=config, loaded=loaded, engine=engine, metrics=metrics)

    @property
    def ready(self) -> bool:
        return not self.draining and self.engine.alive

    @property
    def healthy(self) -> bool:
        """The process can serve: false once the engine thread has died (the liveness probe restarts it)."""
        return self.engine.alive

    @property
    def inflight(self) -> int:
        return self._inflight

    def request_started(self) -> None:
        with self._lock:
            self._inflight += 1

    def request_ended(self) -> None:
        with self._lock:
            self._inflight -= 1

    def begin_drain(self) -> None:
        """Stop taking work: /ready turns 503, new requests get 503, queued and running ones go on."""
        if not self.draining:
            log.info("draining: %d request(s) in flight, grace %.0f s", self._inflight, self.config.drain_grace)
        self.draining = True
        self.metrics.ready.set(0)
        self.engine.stop_accepting()

    def wait_drained(self, grace: float, engine_too: bool = True) -> bool:
        """Block until nothing is in flight (HTTP requests, and with ``engine_too`` engine work) or ``grace``
        seconds passed; True when drained."""
        deadline = time.monotonic() + grace
        while True:
            if self._inflight == 0 and (self.engine.idle or not engine_too):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def abort_open(self, message: str) -> int:
        """End every open generation now: streams get an error event and [DONE], others a 503."""
        return self.engine.abort_open(message, "shutting_down")
