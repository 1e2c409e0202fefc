"""The images, really built and run: buildah builds the router and CPU server images from the project's
Dockerfiles through `make images`' own script, then runs them as their non-root user on the host network.

- the router image: `dsdeploy route` answers /health and routes a chat completion to a loopback upstream;
- the CPU server image, with the SmolLM2 model folder mounted read-only: answers the real `openai` client;
- the build context is what .dockerignore lets through, nothing else;
- each image's size and build time is reported at the end of the run (tests/images/conftest.py).

Skipped only where buildah/mmdebstrap cannot be installed (not Debian) or the kernel refuses chroot builds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest
import yaml

from dsdeploy.images import DEFAULT_REGISTRY, package_version, project_image
from tests.images import buildah_env as env
from tests.images.conftest import REPORT
from tests.support.server_process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
REPO_ROOT = env.REPO_ROOT
FAKE_UPSTREAM = REPO_ROOT / "tests" / "inference" / "router" / "fake_upstream.py"
USER_ID = 10001


@pytest.fixture(scope="module")
def base() -> None:
    missing = env.missing_tools()
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed and not installable here "
            "(make install-debian-tools installs them with apt-get on Debian)"
        )
    cost = env.base_image()
    REPORT.append(
        (
            "base image (stand-in python:3.11-slim)",
            env.image_size(env.BASE_IMAGE),
            "reused" if cost["reused"] else f"rootfs {cost['rootfs_s']:.0f} s + image {cost['image_s']:.0f} s",
        )
    )
    refusal = env.chroot_refusal()
    if refusal:
        pytest.skip(f"this kernel refuses buildah's chroot isolation: {refusal}")


@pytest.fixture(scope="module")
def images(base) -> dict[str, str]:
    """Build the router and the CPU server image with scripts/build_images.py; returns key -> reference."""
    keys = ("router", "server-cpu")
    argv = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "build_images.py"),
        "--tool",
        "buildah",
        "--only",
        ",".join(keys),
        # PyPI is what this machine reaches; torch's CPU wheel comes from its pip config's local wheels.
        "--build-arg",
        "CPU_INDEX=https://pypi.org/simple",
        "--builder-arg=--layers",
        *[f"--builder-arg={arg}" for arg in (*env.RUN_FLAGS, *env.pip_mounts())],
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=2400, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    seconds = dict(re.findall(r"^built (\S+) in (\d+) s$", proc.stdout, re.MULTILINE))
    refs = {key: project_image(key).reference(DEFAULT_REGISTRY, package_version()) for key in keys}
    for ref in refs.values():
        REPORT.append((ref, env.image_size(ref), f"built in {seconds[ref]} s"))
    return refs


class Container:
    """A working container of an image, running its entrypoint with our arguments as a ServerProcess."""

    def __init__(self, ref: str, args: list[str], volumes: dict[str, str], ready_path: str, timeout: float):
        self.name = env.buildah("from", ref).stdout.strip()
        argv = env.run_command(ref, self.name, args, volumes)
        self.server = ServerProcess(argv, ready_path=ready_path, start_timeout=timeout)

    def __enter__(self) -> ServerProcess:
        try:
            return self.server.start()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        leftover = []
        if self.server.process is not None and self.server.process.poll() is None:
            leftover = psutil.Process(self.server.process.pid).children(recursive=True)
        self.server.stop()
        for child in leftover:  # buildah killed by the timeout leaves its chrooted child behind
            if child.is_running():
                child.kill()
        env.buildah("rm", self.name, check=False)

    def user_ids(self) -> set[int]:
        assert self.server.process is not None
        procs = psutil.Process(self.server.process.pid).children(recursive=True)
        return {p.uids().effective for p in procs if "dsdeploy" in " ".join(p.cmdline())}


def test_router_image_routes_to_a_loopback_upstream(images, tmp_path: Path):
    ref = images["router"]
    config = env.image_config(ref)
    assert config["User"] == f"{USER_ID}:{USER_ID}" and config["Entrypoint"] == ["dsdeploy", "route"]
    upstream = ServerProcess(
        [sys.executable, str(FAKE_UPSTREAM), "--name", "local"], host_arg=None, ready_path="/health"
    ).start()
    try:
        router_yaml = tmp_path / "router.yaml"
        router_yaml.write_text(
            yaml.safe_dump({"upstreams": [{"url": upstream.url, "name": "local"}], "health": {"interval_s": 0.2}})
        )
        router_yaml.chmod(0o644)
        container = Container(
            ref,
            ["--config", "/etc/dsdeploy/router.yaml"],
            {str(router_yaml): "/etc/dsdeploy/router.yaml:ro"},
            "/health",
            120,
        )
        with container as router:
            assert httpx.get(router.url + "/health", timeout=5).status_code == 200
            assert container.user_ids() == {USER_ID}, "the router runs as its non-root user"
            client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0, timeout=30)
            answer = client.chat.completions.create(
                model="fake-model", max_tokens=8, messages=[{"role": "user", "content": "hello from the image"}]
            )
            assert answer.choices[0].message.content
            seen = httpx.get(upstream.url + "/_record", timeout=5).json()["requests"]
            assert any("hello from the image" in str(r.get("body")) for r in seen), "the upstream got the request"
            probe = "import importlib.util as u; print(*(bool(u.find_spec(m)) for m in ('torch', 'pulumi', 'infra')))"
            found = subprocess.run(
                ["buildah", "run", *env.RUN_FLAGS, container.name, "--", "python", "-c", probe],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert found.stdout.split() == ["False", "False", "False"], f"the router image has more: {found}"
    finally:
        upstream.stop()


def test_cpu_server_image_answers_the_openai_client_with_the_model_mounted_read_only(images, tmp_path: Path):
    from inference.server.model_files import prepare_model_folder, smollm2_gguf_path

    ref = images["server-cpu"]
    config = env.image_config(ref)
    assert config["User"] == f"{USER_ID}:{USER_ID}" and config["Entrypoint"] == ["dsdeploy", "serve"]
    # A copy readable by the image's user, as a volume with the chart's fsGroup would be.
    model = tmp_path / "model"
    shutil.copytree(prepare_model_folder(smollm2_gguf_path(), REPO_ROOT / ".cache" / "models"), model)
    for path in [model, *model.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.chown(cache, USER_ID, USER_ID)
    args = ["--model", "/models/model", "--served-model-name", "smollm2", "--max-model-len", "1024", "--threads", "1"]
    container = Container(ref, args, {str(model): "/models/model:ro", str(cache): "/cache"}, "/ready", 300)
    started = time.monotonic()
    with container as server:
        ready_s = time.monotonic() - started
        assert container.user_ids() == {USER_ID}, "the server runs as its non-root user"
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list()] == ["smollm2"]
        answer = client.chat.completions.create(
            model="smollm2", max_tokens=8, temperature=0, messages=[{"role": "user", "content": "Say hello."}]
        )
        assert answer.choices[0].message.content and answer.usage.completion_tokens > 0
        probe = "import torch; print(torch.__version__, torch.version.cuda)"
        torch = subprocess.run(
            ["buildah", "run", *env.RUN_FLAGS, container.name, "--", "python", "-c", probe],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.split()
        assert torch[0].endswith("+cpu") and torch[1] == "None", f"the CPU image has a CUDA torch: {torch}"
    REPORT.append((f"{ref} (started)", "", f"ready in {ready_s:.0f} s, torch {torch[0]}"))


def test_the_build_context_is_only_what_the_images_need(base, tmp_path: Path):
    """What .dockerignore lets through: the package metadata, dsdeploy/ and inference/ (no .venv, .cache, tests)."""
    dockerfile = tmp_path / "Dockerfile.context"
    dockerfile.write_text(f"FROM {env.BASE_IMAGE}\nCOPY . /context\n")
    tag = "localhost/dsdeploy-context-probe:test"
    env.buildah("bud", *env.RUN_FLAGS, "-f", str(dockerfile), "-t", tag, str(REPO_ROOT))
    container = env.buildah("from", tag).stdout.strip()
    try:
        listing = env.buildah(
            "run", *env.RUN_FLAGS, container, "--", "sh", "-c", "cd /context && find . -maxdepth 1 | sort && du -sk ."
        ).stdout.split()
    finally:
        env.buildah("rm", container, check=False)
        env.buildah("rmi", tag, check=False)
    kilobytes = int(listing[-2])
    top = {entry.removeprefix("./") for entry in listing[:-2]} - {"."}
    assert top == {"pyproject.toml", "README.md", "dsdeploy", "inference"}, top
    assert kilobytes < 5000, f"the build context holds {kilobytes} kB"
    REPORT.append(("build context", f"{kilobytes} kB", ", ".join(sorted(top))))
