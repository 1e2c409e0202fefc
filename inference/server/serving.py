"""Run the app under uvicorn with a draining SIGTERM.

On the first SIGTERM the server stops being ready (503 on /ready and on new requests) but keeps its
listener open, lets queued and running requests finish for up to ``drain_grace`` seconds, then exits.
A second signal, or SIGINT, exits at once.
"""

from __future__ import annotations

import logging
import signal
import threading

import uvicorn

from .api.app import create_app
from .runtime import Runtime

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self._drain_thread: threading.Thread | None = None

    def handle_exit(self, sig: int, frame) -> None:  # called from the signal handler
        if sig != signal.SIGTERM or self._drain_thread is not None:
            super().handle_exit(sig, frame)
            return
        self.runtime.begin_drain()
        self._drain_thread = threading.Thread(target=self._drain_then_exit, name="dsdeploy-drain", daemon=True)
        self._drain_thread.start()

    def _drain_then_exit(self) -> None:
        drained = self.runtime.wait_drained(self.runtime.config.drain_grace)
        if drained:
            log.info("drained; exiting")
        else:
            log.warning("drain grace of %.0f s over with %d request(s) in flight; exiting",
                        self.runtime.config.drain_grace, self.runtime.inflight)
        self.should_exit = True


def serve(runtime: Runtime, log_level: str = "info") -> int:
    app = create_app(runtime)
    config = uvicorn.Config(app, host=runtime.config.host, port=runtime.config.port, log_level=log_level,
                            timeout_graceful_shutdown=5, access_log=False)
    server = DrainingServer(config, runtime)
    server.run()
    return 0
