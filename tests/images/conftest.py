"""The image tests' report: each image's size and build time, printed at the end of the run."""

from __future__ import annotations

REPORT: list[tuple[str, str, str]] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest's hook signature
    if not REPORT:
        return
    terminalreporter.section("images built and run (buildah)")
    width = max(len(name) for name, _, _ in REPORT)
    for name, size, note in REPORT:
        terminalreporter.write_line(f"{name:<{width}}  {size:>9}  {note}")
