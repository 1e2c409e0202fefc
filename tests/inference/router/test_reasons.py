"""The fallback reasons are declared once (inference/router/reasons.py) and the operator's table says them all."""

from __future__ import annotations

import re
from pathlib import Path

from inference.router import fallback, pool, proxy, reasons, streaming

DOCS = Path(__file__).resolve().parents[3] / "docs"


def _table_reasons() -> set[str]:
    """The backticked names in the first column of docs/operations.md's fallback-reason table."""
    text = (DOCS / "operations.md").read_text()
    table = text[text.index("| reason | meaning | fix |") :]
    table = table[: table.index("\n\n")]
    names = set()
    for row in table.splitlines()[2:]:
        first = row.split("|")[1]
        names |= set(re.findall(r"`([a-z0-9_]+)`", first))
    return names


def test_every_reason_is_one_distinct_name() -> None:
    declared = [*reasons.FALLBACK_REASONS, *reasons.STREAM_REASONS]
    assert len(declared) == len(set(declared))
    assert all(re.fullmatch(r"[a-z0-9_]+", name) for name in declared)  # a Prometheus label value as is


def test_the_operators_table_names_exactly_the_declared_reasons() -> None:
    # stream_interrupted / stream_stalled are named in the stream_continued row's text, not as reasons.
    assert _table_reasons() == set(reasons.FALLBACK_REASONS) - {reasons.REDIRECT}
    router_doc = (DOCS / "router.md").read_text()
    for name in (reasons.REDIRECT, reasons.LOCAL_KEY_REJECTED):  # a 502 / handled as a failed upstream
        assert f"`{name}`" in router_doc, name


def test_the_modules_that_raise_them_use_the_one_declaration() -> None:
    assert proxy.CONNECT_REFUSED is reasons.CONNECT_REFUSED and proxy.LOCAL_KEY_REJECTED is reasons.LOCAL_KEY_REJECTED
    assert pool.SATURATED is reasons.SATURATED and pool.NO_LOCAL is reasons.NO_LOCAL
    assert streaming.INTERRUPTED is reasons.STREAM_INTERRUPTED and streaming.STALLED is reasons.STREAM_STALLED
    source = Path(fallback.__file__).read_text()
    quoted = set(re.findall(r'"([a-z0-9_]+)"', source))
    assert not quoted & set(reasons.FALLBACK_REASONS), "fallback.py spells a reason instead of importing it"
