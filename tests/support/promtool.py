"""promtool (Debian's `prometheus` package, installed by `make test`): rule checks, rule unit tests and the
linter of /metrics pages. A missing promtool fails the test, never skips it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml


def promtool_path() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").is_file() else None)
    if not found:
        pytest.fail(
            "promtool not found: `make test` installs Debian's prometheus package "
            "(apt-get install --no-install-recommends prometheus)"
        )
    return found


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool_path(), *args], input=stdin, capture_output=True, text=True, check=False, timeout=120
    )


def check_rules(groups: list[dict], folder: Path, name: str = "rules.yaml") -> subprocess.CompletedProcess:
    """`promtool check rules` on a rule file holding ``groups`` (a PrometheusRule's spec.groups)."""
    path = folder / name
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return promtool("check", "rules", str(path))


def run_rule_tests(groups: list[dict], tests: list[dict], folder: Path) -> subprocess.CompletedProcess:
    """`promtool test rules` of ``tests`` (promtool's unit-test entries) against ``groups``."""
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    path = folder / "tests.yaml"
    path.write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}, sort_keys=False)
    )
    return promtool("test", "rules", str(path))


def check_metrics(text: str) -> list[str]:
    """The problems `promtool check metrics` finds in a /metrics page, one per line (empty when clean)."""
    proc = promtool("check", "metrics", stdin=text)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr  # 3: lint problems found
    return problems
