"""Run the app under uvicorn with a draining SIGTERM.

On the first SIGTERM the server stops being ready (503 on /ready and on new requests) but keeps its
listener open, and lets queued and running requests finish for up to ``drain_grace`` seconds. Requests
still open then are answered: a stream gets an error event (code ``shutting_down``) and ``data: [DONE]``,
a non-streamed request a 503. Then the process exits, at most ``drain_grace +
SHUTDOWN_AFTER_GRACE_S`` (5) seconds after the SIGTERM. A second SIGTERM, or a SIGINT, answers open
requests the same way at once and exits.
"""

from __future__ import annotations

import logging
import signal
import threading

import uvicorn

from .api.app import create_app
from .runtime import ANSWER_FLUSH_S, CONNECTIONS_CLOSE_S, Runtime

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self._drain_thread: threading.Thread | None = None

    def handle_exit(self, sig: int, frame) -> None:  # called from the signal handler
        if sig != signal.SIGTERM or self._drain_thread is not None:
            # answer what is open (from a thread: the signal may have interrupted a holder of the engine's lock)
            threading.Thread(target=self._abort_open, args=("the server is stopping",), daemon=True).start()
            super().handle_exit(sig, frame)
            return
        self.runtime.begin_drain()
        self._drain_thread = threading.Thread(target=self._drain_then_exit, name="dsdeploy-drain", daemon=True)
        self._drain_thread.start()

    def _abort_open(self, message: str) -> int:
        return self.runtime.abort_open(message)

    def _drain_then_exit(self) -> None:
        grace = self.runtime.config.drain_grace
        if self.runtime.wait_drained(grace):
            log.info("drained; exiting")
        else:
            ended = self._abort_open(f"the server is shutting down (drain grace of {grace:g} s over)")
            log.warning(
                "drain grace of %g s over with %d request(s) in flight; %d generation(s) ended with "
                "shutting_down; exiting",
                grace,
                self.runtime.inflight,
                ended,
            )
            self.runtime.wait_drained(ANSWER_FLUSH_S, engine_too=False)  # the answers just sent go out
        self.should_exit = True


def serve(runtime: Runtime, log_level: str = "info") -> int:
    app = create_app(runtime)
    config = uvicorn.Config(
        app,
        host=runtime.config.host,
        port=runtime.config.port,
        log_level=log_level,
        timeout_graceful_shutdown=round(CONNECTIONS_CLOSE_S),
        access_log=False,
    )
    server = DrainingServer(config, runtime)
    server.run()
    return 0
