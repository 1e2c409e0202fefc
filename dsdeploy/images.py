"""The project's own container images, declared once: names, Dockerfiles, variants, tags, platforms.

Read by ``make images`` (scripts/build_images.py), the release workflow's test (which checks that the
workflow pushes exactly these), the Pulumi program's ``images: build`` option (infra/registry.py) and the
chart's defaults (charts/dsdeploy/values.yaml names the same repositories; a test checks they agree).

Tags: the router is ``<version>``; the server is ``<version>-cpu`` and ``<version>-cuda`` (one Dockerfile, a
``VARIANT`` build argument). The chart, given no tag, pulls ``appVersion`` for the router and
``appVersion-cpu`` or ``appVersion-cuda`` for the server, by whether the engine has GPUs.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where the release workflow publishes (ghcr.io/<repository owner>) and what the chart pulls by default.
DEFAULT_REGISTRY = "ghcr.io/dsdeploy"
ROUTER = "dsdeploy-router"
SERVER = "dsdeploy-server"
_PREFIX = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class ProjectImage:
    """One image the project builds from one of its Dockerfiles."""

    key: str  # router, server-cpu, server-cuda
    name: str  # repository name under the registry prefix
    dockerfile: str  # relative to the repository root (the build context)
    variant: str | None = None  # the server's VARIANT build argument; also the tag suffix
    platforms: tuple[str, ...] = ("linux/amd64",)
    build_args: dict[str, str] = field(default_factory=dict)

    def tag(self, version: str) -> str:
        return f"{version}-{self.variant}" if self.variant else version

    def reference(self, prefix: str, version: str) -> str:
        return f"{prefix}/{self.name}:{self.tag(version)}"


PROJECT_IMAGES: tuple[ProjectImage, ...] = (
    # The router is pure Python: published for arm64 nodes (Graviton, Ampere) as well.
    ProjectImage("router", ROUTER, "inference/Dockerfile.router", platforms=("linux/amd64", "linux/arm64")),
    ProjectImage("server-cpu", SERVER, "inference/Dockerfile.server", "cpu", build_args={"VARIANT": "cpu"}),
    ProjectImage("server-cuda", SERVER, "inference/Dockerfile.server", "cuda", build_args={"VARIANT": "cuda"}),
)


def project_image(key: str) -> ProjectImage:
    for image in PROJECT_IMAGES:
        if image.key == key:
            return image
    raise KeyError(f"no project image {key!r}; known: {', '.join(i.key for i in PROJECT_IMAGES)}")


def server_image_key(gpus_per_replica: int) -> str:
    """The server variant an engine replica needs: the CPU image without GPUs, else the CUDA one."""
    return "server-cpu" if gpus_per_replica == 0 else "server-cuda"


def package_version(root: Path = REPO_ROOT) -> str:
    """The version images are tagged with: pyproject.toml's (the chart's appVersion is the same)."""
    with (root / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def check_prefix(prefix: str) -> str:
    """A registry prefix such as ``registry.example.com:5000/team`` (no scheme, no tag), or ValueError."""
    prefix = prefix.rstrip("/")
    if not _PREFIX.match(prefix):
        raise ValueError(
            f"{prefix!r} is not a registry prefix: expected HOST[:PORT]/PATH in lowercase without a scheme or tag, "
            "e.g. registry.example.com/ml or 123456789012.dkr.ecr.us-east-1.amazonaws.com/dsdeploy"
        )
    return prefix
