"""values.yaml documents every value (`## @param`), and the chart README's table is generated from it.

Regenerate the table after changing values.yaml:  .venv/bin/python -m tests.charts.test_chart_docs
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from infra.chart_values import CHART_DIR

VALUES = CHART_DIR / "values.yaml"
README = CHART_DIR / "README.md"
BEGIN, END = "<!-- params:begin -->", "<!-- params:end -->"
PARAM = re.compile(r"^\s*## @param (\S+) (.+)$")
SECTION = re.compile(r"^\s*## @section (.+)$")


def params() -> list[tuple[str, str, str]]:
    """(section, path, description) in file order."""
    out, section = [], ""
    for line in VALUES.read_text().splitlines():
        if m := SECTION.match(line):
            section = m.group(1)
        elif m := PARAM.match(line):
            out.append((section, m.group(1), m.group(2)))
    return out


def lookup(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node


def leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def table() -> str:
    values = yaml.safe_load(VALUES.read_text())
    lines, section = [], None
    for sec, path, desc in params():
        if sec != section:
            section = sec
            lines += ["", f"### {sec}", "", "| Name | Description | Default |", "|---|---|---|"]
        default = json.dumps(lookup(values, path)).replace("|", "\\|")
        lines.append(f"| `{path}` | {desc.replace('|', '/')} | `{default}` |")
    return "\n".join(lines).strip() + "\n"


def readme_with_table() -> str:
    text = README.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}{END}{tail}"


def test_every_value_is_documented() -> None:
    values = yaml.safe_load(VALUES.read_text())
    documented = [p for _, p, _ in params()]
    for path in documented:
        lookup(values, path)  # KeyError: a @param for a value that does not exist
    undocumented = [
        leaf for leaf in leaves(values) if not any(leaf == d or leaf.startswith(d + ".") for d in documented)
    ]
    assert not undocumented, f"values without a ## @param line: {undocumented}"
    assert len(documented) == len(set(documented))


def test_schema_covers_every_value() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load(VALUES.read_text())
    for top in values:
        assert top in schema["properties"], top


def test_readme_table_is_current() -> None:
    assert README.read_text() == readme_with_table(), (
        "chart README table is stale: run .venv/bin/python -m tests.charts.test_chart_docs"
    )


if __name__ == "__main__":
    README.write_text(readme_with_table())
    print(f"updated {README}")
