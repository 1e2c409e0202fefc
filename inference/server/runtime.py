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


@dataclass
class Runtime:
    config: ServerConfig
    loaded: LoadedModel
    engine: Engine
    metrics: ServerMetrics
    draining: bool = False
    _inflight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, config: ServerConfig, loaded: LoadedModel) -> Runtime:
        metrics = ServerMetrics(loaded.served_model_name)
        metrics.weight_bytes.set(loaded.weight_bytes)
        metrics.max_num_seqs.set(config.max_num_seqs)
        metrics.max_queue.set(config.max_queue)
        prefill = config.max_prefill_tokens or (512 if loaded.device == "cpu" else 8192)
        limits = EngineLimits(max_num_seqs=config.max_num_seqs, max_queue=config.max_queue,
                              max_model_len=loaded.max_model_len, prefill_token_budget=prefill,
                              prefix_cache_tokens=config.prefix_cache_tokens)
        engine = Engine(loaded.model, loaded.tokenizer, limits, loaded.eos_ids, loaded.pad_id, metrics)
        return cls(config=config, loaded=loaded, engine=engine, metrics=metrics)

    @property
    def ready(self) -> bool:
        return not self.draining

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

    def wait_drained(self, grace: float) -> bool:
        """Block until nothing is in flight or ``grace`` seconds passed; True when drained."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self._inflight == 0 and self.engine.idle:
                return True
            time.sleep(0.05)
        return self._inflight == 0 and self.engine.idle
