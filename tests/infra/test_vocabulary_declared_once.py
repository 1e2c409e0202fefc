"""No module spells a shared vocabulary out again: a list of all its names, in any order, stands only where it is
declared (the others import it). Catches a new `choices=["gke", "eks", "existing"]` or `Literal["vllm", "server"]`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


def test_the_engines_memory_share_and_node_span_have_one_default_and_one_range_everywhere() -> None:
    """--gpu-memory-utilization and the nodes per replica: the planner declares them (infra/planner); the stack,
    Pulumi.yaml, both CLI commands and the chart's values schema agree with it. Before, the stack refused 0.99
    that `dsdeploy plan` and the chart took, and the chart took 0.05 that the planner refuses."""
    import argparse
    import json

    import yaml

    from infra import chart_command, plan_command
    from infra.planner import (
        GPU_MEMORY_UTILIZATION,
        GPU_MEMORY_UTILIZATION_RANGE,
        MAX_NODES_PER_REPLICA,
        PlanError,
        plan_deployment,
    )
    from infra.stack_config import StackConfig

    low, high = GPU_MEMORY_UTILIZATION_RANGE
    fields = StackConfig.model_fields
    share, span = fields["gpu_memory_utilization"], fields["max_nodes_per_replica"]
    bounds = {type(m).__name__: m for m in share.metadata}
    assert (share.default, bounds["Ge"].ge, bounds["Le"].le) == (GPU_MEMORY_UTILIZATION, low, high)
    assert span.default == MAX_NODES_PER_REPLICA and any(
        getattr(m, "le", None) == MAX_NODES_PER_REPLICA for m in span.metadata
    )

    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"]
    assert project["gpuMemoryUtilization"]["default"] == f"{GPU_MEMORY_UTILIZATION:.2f}"
    assert f"({low:.2f} .. {high:.2f})" in project["gpuMemoryUtilization"]["description"]
    assert project["maxNodesPerReplica"]["default"] == MAX_NODES_PER_REPLICA

    chart = REPO / "charts" / "dsdeploy"
    engine_schema = json.loads((chart / "values.schema.json").read_text())["properties"]["engine"]["properties"]
    assert (engine_schema["gpuMemoryUtilization"]["minimum"], engine_schema["gpuMemoryUtilization"]["maximum"]) == (
        low,
        high,
    )
    assert (
        yaml.safe_load((chart / "values.yaml").read_text())["engine"]["gpuMemoryUtilization"] == GPU_MEMORY_UTILIZATION
    )

    for module in (plan_command, chart_command):
        parser = argparse.ArgumentParser()
        module.register(parser.add_subparsers())
        command = "plan" if module is plan_command else "values"
        extra = [] if module is plan_command else ["--platform", "gke"]
        args = parser.parse_args([command, "--model", "m", "--tier", "base", *extra])
        assert (args.gpu_memory_utilization, args.max_nodes) == (GPU_MEMORY_UTILIZATION, MAX_NODES_PER_REPLICA)

    for outside in (low - 0.01, high + 0.005):
        with pytest.raises(PlanError, match=rf"allowed {low:.2f}\.\.{high:.2f}"):
            plan_deployment("r1-distill-qwen-7b", "base", gpu_memory_utilization=outside)
    assert plan_deployment("r1-distill-qwen-7b", "base", gpu_memory_utilization=high).gpu_memory_utilization == high
