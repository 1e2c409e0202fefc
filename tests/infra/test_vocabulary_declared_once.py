"""No module spells a shared vocabulary out again: a list of all its names, in any order, stands only where it is
declared (the others import it). Catches a new `choices=["gke", "eks", "existing"]` or `Literal["vllm", "server"]`."""

from __future__ import annotations

import ast
from pathlib import Path

from inference.engines import ENGINE_TYPES, SERVER_QUANTIZATIONS
from inference.router.config import DATA_CLASSES
from infra.catalog import load_catalog
from infra.catalog.schema import CLOUD_PLATFORMS, PLATFORMS

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for top in ("infra", "inference", "dsdeploy", "scripts") for p in (REPO / top).rglob("*.py"))
VOCABULARIES = {  # the names -> the one module that may list them
    frozenset(PLATFORMS): "infra/catalog/schema.py",
    frozenset(CLOUD_PLATFORMS): "infra/catalog/schema.py",
    frozenset(ENGINE_TYPES): "inference/engines.py",
    frozenset(SERVER_QUANTIZATIONS): "inference/engines.py",
    frozenset(DATA_CLASSES): "inference/router/config.py",
    frozenset(load_catalog().tiers): "infra/catalog/tiers.yaml",  # no Python module lists the tiers
}


def _string_lists(tree: ast.AST) -> list[tuple[int, frozenset[str]]]:
    """Every tuple, list or set whose items are all string constants (Literal["a", "b"] holds such a tuple)."""
    found = []
    for node in ast.walk(tree):
        items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else None
        if items and len(items) > 1 and all(isinstance(i, ast.Constant) and isinstance(i.value, str) for i in items):
            found.append((node.lineno, frozenset(i.value for i in items)))
    return found


def test_each_vocabulary_is_listed_only_where_it_is_declared() -> None:
    assert SOURCES, "no sources found"
    spelled = []
    for path in SOURCES:
        where = path.relative_to(REPO).as_posix()
        for line, names in _string_lists(ast.parse(path.read_text(), filename=where)):
            home = VOCABULARIES.get(names)
            if home is not None and home != where:
                spelled.append(f"{where}:{line} lists {sorted(names)} (import it from {home})")
    assert not spelled, "\n".join(spelled)


def test_the_check_sees_a_spelled_out_list() -> None:
    tree = ast.parse('choices = ["existing", "gke", "eks"]\nx: Literal["server", "vllm"]')
    assert {names for _, names in _string_lists(tree)} == {frozenset(PLATFORMS), frozenset(ENGINE_TYPES)}
