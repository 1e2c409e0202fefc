"""One Kubernetes quantity grammar: infra/quantity.py, the stack config, the chart options and the chart's
schema accept and refuse the same strings, and those are the strings Kubernetes' ParseQuantity accepts."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from infra.chart_values import CHART_DIR, ChartOptions
from infra.quantity import QUANTITY_PATTERN, is_quantity
from infra.stack_config import StackConfigError, validate_stack_config
from tests.charts.conftest import helm_template

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
# The schema's own definition, with its $defs so that the $ref resolves as it does for the chart.
QUANTITY_SCHEMA = {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/quantity"}
STACK = {
    "platform": "gke",
    "tier": "base",
    "model": "r1-distill-qwen-7b",
    "region": "us-central1",
    "zone": "us-central1-a",
}

# What k8s.io/apimachinery/pkg/api/resource ParseQuantity makes of each (quantity.go's grammar comment and
# parseQuantityString; suffix.go's suffixes).
ACCEPTED = [
    "200Gi",
    "1Ki",
    "3Ei",
    "500k",
    "500M",
    "2G",
    "1T",
    "1P",
    "1E",
    "250m",
    "10u",
    "5n",
    "0",
    "1",
    "1.5",
    "1.",
    ".5",
    "+1Gi",
    "-1Gi",
    "1e3",
    "1E3",
    "1e-3",
    "1E+6",
    "12e6",
    "0.5Mi",
    "007",
]
REFUSED = [
    "500K",  # the decimal kilo is lower-case k
    "1KI",
    "1ki",
    "1kI",
    "1Gb",
    "1GB",
    "1GiB",
    "1g",
    "1mi",  # binary suffixes are exactly Ki Mi Gi Ti Pi Ei
    "",
    ".",
    "+",
    "Gi",
    "lots",
    "1.5.5",
    "1 Gi",
    " 1Gi",
    "1Gi ",
    "1,5Gi",
    "1e",
    "1e+",
    "1e1.5",
    "1Gi1",
    "0x10",
    "1Zi",
    "1Y",
    "--1",
    "1e3Gi",
]
TABLE = [(text, True) for text in ACCEPTED] + [(text, False) for text in REFUSED]


def _stack_accepts(text: str) -> bool:
    try:
        validate_stack_config({**STACK, "storageSize": text})
    except StackConfigError as exc:
        assert "storageSize" in str(exc) and "Kubernetes quantity" in str(exc), exc
        return False
    return True


def _options_accept(text: str) -> bool:
    try:
        ChartOptions(platform="gke", model_cache_size=text)
    except ValidationError as exc:
        assert "model_cache_size" in str(exc) and "Kubernetes quantity" in str(exc), exc
        return False
    return True


def _schema_accepts(text: str) -> bool:
    return jsonschema.Draft7Validator(QUANTITY_SCHEMA).is_valid(text)


@pytest.mark.parametrize(("text", "kubernetes_accepts"), TABLE, ids=[repr(t) for t, _ in TABLE])
def test_every_checker_agrees_with_kubernetes(text: str, kubernetes_accepts: bool) -> None:
    verdicts = {
        "infra.quantity": is_quantity(text),
        "stack config storageSize": _stack_accepts(text),
        "ChartOptions.model_cache_size": _options_accept(text),
        "values.schema.json": _schema_accepts(text),
    }
    assert verdicts == dict.fromkeys(verdicts, kubernetes_accepts), verdicts


def test_the_chart_schema_declares_the_python_pattern() -> None:
    assert SCHEMA["$defs"]["quantity"]["pattern"] == QUANTITY_PATTERN


def test_a_trailing_newline_is_no_quantity() -> None:
    # Python's `$` also matches before a final newline; Helm's Go regexp (and JSON Schema's ECMA-262) does not.
    assert not is_quantity("200Gi\n")
    assert not _stack_accepts("200Gi\n") and not _options_accept("200Gi\n")


SIZE_FIELDS = {  # values path -> the path helm names in its schema error
    ("modelCache", "size"): "/modelCache/size",
    ("engine", "shm", "sizeLimit"): "/engine/shm/sizeLimit",
    ("engine", "resources", "requests", "memory"): "/engine/resources/requests/memory",
    ("engine", "resources", "limits", "memory"): "/engine/resources/limits/memory",
}


def _values(texts: list[str]) -> dict:
    values: dict = {}
    for path, text in zip(SIZE_FIELDS, texts, strict=True):
        node = values
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = text
    return values


def _helm(texts: list[str], tmp: Path):  # noqa: ANN202
    # JSON, not YAML: PyYAML writes 1e9 unquoted, which Helm's YAML reads as a number.
    path = tmp / "values.json"
    path.write_text(json.dumps(_values(texts)))
    return helm_template("-f", str(path))


def test_helm_reads_the_pattern_as_python_does(tmp_path: Path) -> None:
    """Helm validates values.schema.json with Go's regexp (RE2): the same verdicts on the hard cases."""
    accepted = _helm(["500k", "1.5Gi", "1e9", "+.5Ti"], tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    refused = _helm(["500K", "1e1.5", "1GiB", "200Gi\n"], tmp_path)
    assert refused.returncode != 0
    for where in SIZE_FIELDS.values():
        assert where in refused.stderr, (where, refused.stderr)
