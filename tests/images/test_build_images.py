"""`make images` (scripts/build_images.py): which builder, which tags, which platforms, refusals.

The builds themselves run in test_image_build.py (buildah, slow); here the script's choices, through its
real command line: ``--dry-run`` prints the builder commands, and the builder probes run against small
executables on a PATH of the test's making (a docker client without a daemon, as on these machines).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dsdeploy.images import DEFAULT_REGISTRY, PROJECT_IMAGES, REPO_ROOT, package_version

SCRIPT = REPO_ROOT / "scripts" / "build_images.py"
VERSION = package_version()


def _script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def _commands(*args: str) -> list[list[str]]:
    proc = _script("--dry-run", *args)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines()]


def _tags(cmds: list[list[str]]) -> list[str]:
    return [cmd[cmd.index("-t") + 1] for cmd in cmds if "-t" in cmd]


def test_local_build_tags_every_image_with_the_package_version_under_the_chart_default():
    cmds = _commands("--tool", "buildah")
    assert _tags(cmds) == [
        f"{DEFAULT_REGISTRY}/dsdeploy-router:{VERSION}",
        f"{DEFAULT_REGISTRY}/dsdeploy-server:{VERSION}-cpu",
        f"{DEFAULT_REGISTRY}/dsdeploy-server:{VERSION}-cuda",
    ]
    variants = [next(a for a in cmd if a.startswith("--build-arg=VARIANT=")) for cmd in cmds[1:]]
    assert variants == ["--build-arg=VARIANT=cpu", "--build-arg=VARIANT=cuda"]
    assert all(cmd[-1] == str(REPO_ROOT) for cmd in cmds), "the context is the repository root (.dockerignore)"
    assert not any("push" in cmd for cmd in cmds), "nothing is pushed without PUSH"


def test_push_with_docker_builds_the_router_for_arm64_too_and_pushes():
    cmds = _commands("--tool", "docker", "--push", "registry.example.com:5000/ml")
    router, cpu, cuda = cmds
    assert router[:3] == ["docker", "buildx", "build"] and "--push" in router
    assert "--platform=linux/amd64,linux/arm64" in router
    assert "--platform=linux/amd64" in cpu and "--platform=linux/amd64" in cuda
    assert _tags(cmds) == [
        f"registry.example.com:5000/ml/dsdeploy-router:{VERSION}",
        f"registry.example.com:5000/ml/dsdeploy-server:{VERSION}-cpu",
        f"registry.example.com:5000/ml/dsdeploy-server:{VERSION}-cuda",
    ]


def test_push_with_buildah_makes_a_manifest_list_for_the_router():
    cmds = _commands("--tool", "buildah", "--push", "registry.example.com/ml", "--only", "router,server-cpu")
    ref = f"registry.example.com/ml/dsdeploy-router:{VERSION}"
    assert cmds[0] == ["buildah", "manifest", "rm", ref]
    assert f"--manifest={ref}" in cmds[1] and "--platform=linux/amd64,linux/arm64" in cmds[1]
    assert cmds[2] == ["buildah", "manifest", "push", "--all", ref, f"docker://{ref}"]
    cpu = f"registry.example.com/ml/dsdeploy-server:{VERSION}-cpu"
    assert cmds[4] == ["buildah", "push", cpu, f"docker://{cpu}"]
    narrowed = _commands(
        "--tool", "buildah", "--push", "registry.example.com/ml", "--only", "router", "--platforms", "linux/amd64"
    )
    assert len(narrowed) == 2 and "--platform=linux/amd64" in narrowed[0], "one platform: no manifest list"


def test_build_args_and_builder_args_reach_the_builder():
    cmds = _commands(
        "--tool",
        "podman",
        "--only",
        "server-cpu",
        "--build-arg",
        "CPU_INDEX=https://mirror.example/cpu",
        "--builder-arg=--volume=/etc/pip.conf:/etc/pip.conf:ro",
    )
    assert cmds[0][:2] == ["podman", "build"] and "--format=docker" in cmds[0], "docker format keeps HEALTHCHECK"
    assert "--build-arg=CPU_INDEX=https://mirror.example/cpu" in cmds[0]
    assert "--volume=/etc/pip.conf:/etc/pip.conf:ro" in cmds[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--push", "https://registry.example.com/ml"], "'https://registry.example.com/ml' is not a registry prefix"),
        (["--push", "Registry.Example.com/ML"], "is not a registry prefix"),
        (["--only", "server-rocm"], "--only 'server-rocm': not a project image; choose from router, server-cpu"),
        (["--build-arg", "CPU_INDEX"], "--build-arg 'CPU_INDEX': expected KEY=VALUE"),
        (
            ["--push", "r.example.com/x", "--only", "server-cpu", "--platforms", "linux/arm64"],
            "none of linux/amd64 that server-cpu is built for",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_option(args: list[str], message: str):
    proc = _script("--dry-run", "--tool", "buildah", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == "", "nothing is built after a refusal"


def _fake_tool(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)


def test_a_docker_client_without_a_daemon_is_passed_over_for_buildah(tmp_path: Path):
    log = tmp_path / "calls.log"
    _fake_tool(tmp_path, "docker", 'case "$1" in buildx) echo v0.20;; info) echo "Cannot connect" >&2; exit 1;; esac')
    _fake_tool(tmp_path, "buildah", f'echo "$@" >> {log}; exit 0')
    env = {"PATH": str(tmp_path)}
    proc = _script("--only", "router", env=env)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "version", "buildah was probed"
    assert calls[1].startswith("bud --format=docker -f ") and f"dsdeploy-router:{VERSION}" in calls[1]
    assert f"built {DEFAULT_REGISTRY}/dsdeploy-router:{VERSION} in" in proc.stdout


def test_no_working_builder_is_an_error_that_says_what_to_install(tmp_path: Path):
    _fake_tool(tmp_path, "docker", "exit 1")
    proc = _script("--only", "router", env={"PATH": str(tmp_path)})
    assert proc.returncode == 2
    assert "no image builder found" in proc.stderr and "apt-get install buildah" in proc.stderr


def test_a_failing_build_stops_the_run_and_names_the_builder(tmp_path: Path):
    _fake_tool(tmp_path, "podman", 'case "$1" in info) echo amd64;; *) exit 7;; esac')
    proc = _script("--tool", "podman", env={"PATH": str(tmp_path)})
    assert proc.returncode == 2
    assert "podman exited 7" in proc.stderr
    assert proc.stdout.count("+ podman build") == 1, "the second image is not attempted after the first failed"


def test_every_project_image_has_a_dockerfile_in_the_context():
    for image in PROJECT_IMAGES:
        assert (REPO_ROOT / image.dockerfile).is_file(), image
