"""Build the project's images (router, server cpu and cuda) with whichever builder is present; push them.

``make images`` runs this. The builder is the first that works of docker buildx (with a reachable daemon),
podman and buildah; every image is tagged with the package version (dsdeploy/images.py says how). Without
``--push`` the images stay local, built for this machine's platform, under the chart's default repository
(ghcr.io/dsdeploy) so a local cluster (kind, k3d) can load them as they are. With ``--push REGISTRY/PREFIX``
they are tagged under that prefix, built for every platform the project publishes (the router also for
linux/arm64; ``--platforms`` narrows it) and pushed. Stops at the first failing build, saying which.

Usage: python scripts/build_images.py [--push PREFIX] [--only router,server-cpu] [--tool buildah]
           [--build-arg NAME=VALUE]... [--builder-arg ARG]... [--dry-run]
"""

from __future__ import annotations

import argparse
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsdeploy.cli import key_value_pairs  # noqa: E402
from dsdeploy.images import (  # noqa: E402
    DEFAULT_REGISTRY,
    PROJECT_IMAGES,
    REPO_ROOT,
    ProjectImage,
    check_prefix,
    package_version,
)

TOOLS = ("docker", "podman", "buildah")
# What proves a builder usable: docker needs buildx and a daemon; podman and buildah need only themselves.
PROBES = {
    "docker": (["docker", "buildx", "version"], ["docker", "info", "--format", "{{.ServerVersion}}"]),
    "podman": (["podman", "info", "--format", "{{.Host.Arch}}"],),
    "buildah": (["buildah", "version"],),
}
SOURCE = "https://github.com/dsdeploy/dsdeploy"


class BuildError(RuntimeError):
    pass


def _works(argv: list[str]) -> bool:
    if not shutil.which(argv[0]):
        return False
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def find_tool(wanted: str) -> str:
    """The builder to use: ``wanted`` when it works, else the first working one for ``auto``."""
    candidates = TOOLS if wanted == "auto" else (wanted,)
    for tool in candidates:
        if all(_works(probe) for probe in PROBES[tool]):
            return tool
    if wanted != "auto":
        raise BuildError(
            f"--tool {wanted}: it is not installed or does not work here "
            f"({' and '.join(' '.join(p) for p in PROBES[wanted])} failed)"
        )
    raise BuildError(
        "no image builder found: install docker with buildx (and start the daemon), podman or buildah "
        "(Debian: apt-get install buildah)"
    )


def host_platform() -> str:
    machine = platform.machine().lower()
    return "linux/" + {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def commands(
    tool: str,
    image: ProjectImage,
    ref: str,
    *,
    push: bool,
    platforms: list[str],
    build_args: dict[str, str],
    builder_args: list[str],
    version: str,
) -> list[list[str]]:
    """The commands that build ``image`` as ``ref`` (and push it when ``push``), for one builder."""
    args = [f"--build-arg={k}={v}" for k, v in {**image.build_args, **build_args}.items()]
    args += [
        f"--label=org.opencontainers.image.version={version}",
        f"--label=org.opencontainers.image.source={SOURCE}",
        f"--label=org.opencontainers.image.title={image.name}",
    ]
    dockerfile = str(REPO_ROOT / image.dockerfile)
    context = str(REPO_ROOT)
    joined = ",".join(platforms)
    if tool == "docker":
        out = "--push" if push else "--load"
        return [
            [
                "docker",
                "buildx",
                "build",
                "-f",
                dockerfile,
                "-t",
                ref,
                f"--platform={joined}",
                out,
                *args,
                *builder_args,
                context,
            ]
        ]
    build = [tool, "build" if tool == "podman" else "bud", "--format=docker", "-f", dockerfile, *args, *builder_args]
    if len(platforms) > 1:  # a manifest list: one image per platform under one name
        return [
            [tool, "manifest", "rm", ref],
            [*build, f"--platform={joined}", f"--manifest={ref}", context],
            [tool, "manifest", "push", "--all", ref, f"docker://{ref}"],
        ]
    steps = [[*build, f"--platform={joined}", "-t", ref, context]]
    if push:
        steps.append([tool, "push", ref, f"docker://{ref}"])
    return steps


def _run(argv: list[str], *, allowed_to_fail: bool = False) -> None:
    print("+ " + shlex.join(argv), flush=True)
    code = subprocess.run(argv, check=False).returncode
    if code and not allowed_to_fail:
        raise BuildError(f"{argv[0]} exited {code}: {shlex.join(argv[:4])} ...")


def select(only: str | None) -> list[ProjectImage]:
    if not only:
        return list(PROJECT_IMAGES)
    wanted = [key for key in only.replace(",", " ").split() if key]
    known = {image.key: image for image in PROJECT_IMAGES}
    unknown = [key for key in wanted if key not in known]
    if unknown:
        raise BuildError(f"--only {unknown[0]!r}: not a project image; choose from {', '.join(known)}")
    return [known[key] for key in wanted]


def build_all(args: argparse.Namespace) -> list[tuple[str, float]]:
    """Build (and push) the selected images; returns each reference with its build time in seconds."""
    version = package_version()
    prefix = check_prefix(args.push) if args.push else DEFAULT_REGISTRY
    images = select(args.only)
    build_args = key_value_pairs(args.build_arg, "--build-arg", "CPU_INDEX=https://pypi.org/simple")
    tool = args.tool if args.dry_run and args.tool != "auto" else find_tool(args.tool)
    builder_args = list(args.builder_arg)
    if (
        tool == "buildah"
        and not any(shutil.which(rt) for rt in ("crun", "runc"))
        and not any(a.startswith("--isolation") for a in builder_args)
    ):
        # Without an OCI runtime buildah can still run RUN steps, chrooted (it needs root, as buildah does here).
        builder_args.insert(0, "--isolation=chroot")
    narrowed = [p for p in args.platforms.replace(",", " ").split() if p] if args.platforms else None
    done: list[tuple[str, float]] = []
    for image in images:
        ref = image.reference(prefix, version)
        wanted = list(image.platforms) if args.push else [host_platform()]
        platforms = [p for p in wanted if p in narrowed] if narrowed else wanted
        if not platforms:
            raise BuildError(f"--platforms {args.platforms}: none of {', '.join(wanted)} that {image.key} is built for")
        started = time.monotonic()
        for step in commands(
            tool,
            image,
            ref,
            push=bool(args.push),
            platforms=platforms,
            build_args=build_args,
            builder_args=builder_args,
            version=version,
        ):
            if args.dry_run:
                print(shlex.join(step))
            else:
                _run(step, allowed_to_fail=step[1:3] == ["manifest", "rm"])
        done.append((ref, time.monotonic() - started))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--push", metavar="REGISTRY/PREFIX", help="tag under this prefix and push, e.g. ghcr.io/acme")
    parser.add_argument("--only", help="images to build (default all): " + ", ".join(i.key for i in PROJECT_IMAGES))
    parser.add_argument("--tool", choices=("auto", *TOOLS), default="auto")
    parser.add_argument("--platforms", help="only these of each image's platforms, e.g. linux/amd64")
    parser.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Dockerfile ARG, e.g. CPU_INDEX=https://mirror.example/pytorch-cpu (repeatable)",
    )
    parser.add_argument(
        "--builder-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the builder, e.g. --builder-arg=--isolation=chroot (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    args = parser.parse_args(argv)
    try:
        done = build_all(args)
    except (BuildError, ValueError) as exc:
        print(f"make images: {exc}", file=sys.stderr)
        return 2
    if not args.dry_run:
        for ref, seconds in done:
            print(f"built {ref} in {seconds:.0f} s" + (" and pushed it" if args.push else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
