from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import FakeProcess
from .redis_server import RedisServer


@pytest.fixture(scope="session")
def fakes() -> Iterator[dict[str, FakeProcess]]:
    """Two local upstreams (a, b) and the DeepSeek stand-in (cloud), shared by all router tests."""
    procs = {name: FakeProcess(name) for name in ("a", "b", "cloud")}
    try:
        for p in procs.values():
            p.start()
        yield procs
    finally:
        for p in procs.values():
            p.kill()


@pytest.fixture()
def ups(fakes: dict[str, FakeProcess]) -> dict[str, FakeProcess]:
    """The shared fakes, running, unfrozen, with default behaviour and an empty record."""
    for p in fakes.values():
        p.ensure_running()
    return fakes


@pytest.fixture()
def redis_server(tmp_path) -> Iterator[RedisServer]:  # noqa: ANN001
    """A fresh redis-server on 127.0.0.1 (random port, password ``redis_server.PASSWORD``), killed after."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
