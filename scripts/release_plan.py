"""What the release workflow publishes for a version tag: checked versions, the registry, the image matrix.

.github/workflows/release.yml runs this first and takes everything from its output (GitHub step outputs,
``key=value`` lines), so the workflow names no image itself: the names, variants and platforms are the ones
in dsdeploy/images.py, the same the chart pulls by default. Refuses (exit 1) a tag that is not
``v`` + the package version, or a chart whose ``version``/``appVersion`` differ from it.

Usage: python scripts/release_plan.py --tag v0.1.0 --owner dsdeploy
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsdeploy.images import PROJECT_IMAGES, REPO_ROOT, package_version  # noqa: E402

CHART = REPO_ROOT / "charts" / "dsdeploy" / "Chart.yaml"


class ReleaseError(ValueError):
    pass


def release_plan(tag: str, owner: str) -> dict[str, str]:
    version = package_version()
    if tag != f"v{version}":
        raise ReleaseError(f"tag {tag!r} does not match the package version: expected v{version} (pyproject.toml)")
    text = CHART.read_text()
    for key in ("version", "appVersion"):  # top-level scalars; no YAML library on a bare runner
        found = re.search(rf"^{key}:\s*[\"']?([^\"'\s#]+)", text, re.MULTILINE)
        value = found.group(1) if found else None
        if value != version:
            raise ReleaseError(f"charts/dsdeploy/Chart.yaml {key} is {value!r}, not the package version {version}")
    if not owner:
        raise ReleaseError("--owner is empty (the workflow passes github.repository_owner)")
    registry = f"ghcr.io/{owner.lower()}"  # GHCR names are lowercase
    matrix = {
        "include": [
            {
                "key": image.key,
                "name": image.name,
                "dockerfile": image.dockerfile,
                "tag": image.tag(version),
                "platforms": ",".join(image.platforms),
                "build-args": "\n".join(f"{k}={v}" for k, v in image.build_args.items()),
            }
            for image in PROJECT_IMAGES
        ]
    }
    return {
        "version": version,
        "registry": registry,
        "chart-repository": f"oci://{registry}/charts",
        "matrix": json.dumps(matrix, separators=(",", ":")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", required=True, help="the pushed tag, e.g. v0.1.0 (github.ref_name)")
    parser.add_argument("--owner", required=True, help="the repository owner (github.repository_owner)")
    args = parser.parse_args(argv)
    try:
        plan = release_plan(args.tag, args.owner)
    except ReleaseError as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1
    for key, value in plan.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
