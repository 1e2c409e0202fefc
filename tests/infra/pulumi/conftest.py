"""Fixtures of the Pulumi program tests; the stacks themselves live in pulumi_stacks.py."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pulumi_harness import ProgramRun  # noqa: E402
from pulumi_stacks import STACKS, stack_run  # noqa: E402


@pytest.fixture(autouse=True)
def event_loop_for_pulumi():
    """Pulumi's mocks call asyncio.get_event_loop(); a test elsewhere that ran asyncio.run() leaves the
    main thread with no current loop (Python 3.11 then raises), so give each Pulumi test one."""
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    yield


@pytest.fixture(params=sorted(STACKS), ids=lambda key: f"{key[0]}-{key[1]}")
def any_run(request) -> tuple[tuple[str, str], ProgramRun]:
    return request.param, stack_run(*request.param)
