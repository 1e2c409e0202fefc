"""Build and run the project's images here, without a Docker daemon: Debian's buildah, chroot isolation.

- :func:`base_image` makes the local stand-in for ``python:3.11-slim`` that the Dockerfiles name: a Debian
  bookworm root file system from mmdebstrap (python3, venv, pip, CA certificates), with Debian's
  ``EXTERNALLY-MANAGED`` marker removed and ``python``/``pip`` on PATH as in the official image. The root file
  system (``.cache/images``) and the image (buildah's storage, labelled with the recipe's hash) are reused
  while the recipe is unchanged, so only the first run pays for them.
- :func:`pip_mounts` gives the builds this machine's way to the package index (its pip config, CA bundle and
  local wheel folders, mounted read-only into the RUN steps); the Dockerfiles stay what a user builds.
- :func:`run_command` turns an image's entrypoint and the caller's arguments into a ``buildah run``: the
  image's user, environment and working directory apply, as in ``docker run IMAGE ARGS``.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache" / "images"
BASE_IMAGE = "docker.io/library/python:3.11-slim"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
# Inside the stand-in, what the official image offers: pip may install into the system Python, and the
# commands are called python and pip.
FIXUP = (
    "rm -f /usr/lib/python3*/EXTERNALLY-MANAGED && ln -sf /usr/bin/python3 /usr/local/bin/python "
    "&& ln -sf /usr/bin/pip3 /usr/local/bin/pip && python --version && pip --version"
)
LABEL = "dsdeploy.test.stand-in"
RUN_FLAGS = ("--isolation=chroot", "--network=host")
PIP_KEYS = ("cert", "index-url", "extra-index-url", "find-links", "trusted-host")


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps([SUITE, PACKAGES, FIXUP]).encode()).hexdigest()[:16]


def missing_tools() -> list[str]:
    return [tool for tool in ("buildah", "mmdebstrap") if not shutil.which(tool)]


def buildah(*args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode:
        raise RuntimeError(f"buildah {' '.join(args[:3])} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def image_config(ref: str) -> dict | None:
    proc = buildah("inspect", "--type", "image", ref, check=False)
    return json.loads(proc.stdout)["OCIv1"]["config"] if proc.returncode == 0 else None


def base_image() -> dict[str, float | bool]:
    """Make (or reuse) the stand-in base image; returns what it cost: seconds per step and whether reused."""
    wanted = recipe_hash()
    config = image_config(BASE_IMAGE)
    if config and (config.get("Labels") or {}).get(LABEL) == wanted:
        return {"reused": True, "rootfs_s": 0.0, "image_s": 0.0}
    CACHE.mkdir(parents=True, exist_ok=True)
    rootfs = CACHE / f"rootfs-{SUITE}-{wanted}.tar"
    started = time.monotonic()
    if not rootfs.is_file():
        partial = rootfs.with_name(rootfs.stem + ".partial.tar")  # mmdebstrap picks the format by extension
        proc = subprocess.run(
            ["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(partial)],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        if proc.returncode:
            raise RuntimeError(f"mmdebstrap exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        partial.rename(rootfs)
    rootfs_s = time.monotonic() - started
    started = time.monotonic()
    container = buildah("from", "scratch").stdout.strip()
    try:
        buildah("add", container, str(rootfs), "/")
        buildah("run", *RUN_FLAGS, container, "--", "/bin/sh", "-c", FIXUP)
        buildah(
            "config",
            "--env",
            "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            "--cmd",
            "python3",
            "--label",
            f"{LABEL}={wanted}",
            container,
        )
        buildah("commit", "--rm", container, BASE_IMAGE)
    except BaseException:
        buildah("rm", container, check=False)
        raise
    return {"reused": False, "rootfs_s": rootfs_s, "image_s": time.monotonic() - started}


def chroot_refusal() -> str | None:
    """Why this kernel refuses chroot builds (buildah's chroot isolation needs mount namespaces), or None."""
    container = buildah("from", BASE_IMAGE).stdout.strip()
    try:
        proc = buildah("run", *RUN_FLAGS, container, "--", "true", check=False, timeout=120)
    finally:
        buildah("rm", container, check=False)
    if proc.returncode == 0:
        return None
    text = proc.stderr.lower()
    if any(word in text for word in ("operation not permitted", "permission denied", "unshare", "namespace")):
        return proc.stderr.strip()[-500:]
    raise RuntimeError(f"buildah run failed for a reason other than the kernel's refusal:\n{proc.stderr[-3000:]}")


def _pip_settings() -> dict[str, str]:
    """This machine's pip settings (files, then PIP_* variables, as pip reads them), for the keys a build needs."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True)
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        name, _, value = line.partition("=")
        section, _, key = name.rpartition(".")
        if key in PIP_KEYS:
            (env if section == ":env:" else files)[key] = value.strip("'\"")
    return {**files, **env}


def _local_path(location: str) -> Path | None:
    if location.startswith("file://"):
        return Path(urlparse(location).path)
    return Path(location) if location.startswith("/") else None


def pip_mounts() -> list[str]:
    """``--volume`` arguments that give the RUN steps this machine's pip config, CA bundle and local indexes."""
    settings = _pip_settings()
    CACHE.mkdir(parents=True, exist_ok=True)
    config = configparser.ConfigParser()
    config["global"] = settings
    conf = CACHE / "pip.conf"
    with conf.open("w") as handle:
        config.write(handle)
    mounts = {str(conf): "/etc/pip.conf"}
    for key in ("cert", "find-links", "index-url", "extra-index-url"):
        for location in settings.get(key, "").split():
            path = _local_path(location)
            if path is None or not path.exists():
                continue
            # A PEP 503 index links its files relative to its root (../../files/...): mount the folder above it.
            if key.endswith("index-url"):
                path = path.parent
            mounts[str(path)] = str(path)
    return [f"--volume={source}:{target}:ro" for source, target in mounts.items()]


def run_command(image: str, container: str, args: list[str], volumes: dict[str, str]) -> list[str]:
    """``buildah run`` in ``container`` (from ``image``) of the image's entrypoint with ``args`` replacing its CMD."""
    entrypoint = (image_config(image) or {}).get("Entrypoint") or []
    return [
        "buildah",
        "run",
        *RUN_FLAGS,
        *[f"--volume={src}:{dst}" for src, dst in volumes.items()],
        container,
        "--",
        *entrypoint,
        *args,
    ]


def image_size(ref: str) -> str:
    for entry in json.loads(buildah("images", "--json", ref).stdout):
        return str(entry["size"])
    raise RuntimeError(f"no image {ref}")
