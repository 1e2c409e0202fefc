"""Read a Prometheus /metrics page into plain numbers (tests assert on them)."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, frozenset(labels.items())): value}`` from ``url`` (e.g. http://127.0.0.1:8000/metrics)."""
    text = httpx.get(url, timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(url: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in scrape(url).items() if n == name and wanted <= ls)


def wait_for(url: str, name: str, predicate, timeout: float = 30.0, **labels: str) -> float:
    """Poll until ``predicate(value)`` holds; return the value (raises TimeoutError with the last value)."""
    deadline = time.monotonic() + timeout
    current = value(url, name, **labels)
    while not predicate(current):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}{labels or ''} is {current} after {timeout:.0f} s")
        time.sleep(0.1)
        current = value(url, name, **labels)
    return current
