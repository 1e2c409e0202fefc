#!/usr/bin/env bash
# Install what the image test needs (tests/images/test_image_build.py): Debian's buildah, which builds and runs
# images without a daemon, and mmdebstrap, which makes the Debian root file system of the local base image.
# Idempotent. Where neither the tools nor apt-get are there (not Debian), it says so and the test skips.
set -euo pipefail
if command -v buildah >/dev/null && command -v mmdebstrap >/dev/null; then
    echo "buildah and mmdebstrap already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "warning: buildah/mmdebstrap missing and no apt-get to install them; the image build test will skip" >&2
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
fi
# Another apt-get (a parallel job, unattended-upgrades) may hold the lock: wait for it rather than fail.
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    buildah mmdebstrap
buildah --version
