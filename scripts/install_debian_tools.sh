#!/usr/bin/env bash
# Install the Debian packages the tests run, given as COMMAND:PACKAGE pairs (see DEBIAN_TOOLS in the Makefile);
# a package is installed only when its command is missing. Idempotent. Where apt-get is absent (not Debian)
# it says so and exits 0: the tests that need a missing tool fail or skip with a message naming it.
set -euo pipefail
missing=()
for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "warning: ${missing[*]} missing and no apt-get to install them" >&2
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
fi
echo "installing Debian packages: ${missing[*]}"
# Another apt-get (a parallel job, unattended-upgrades) may hold the lock: wait for it rather than fail.
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    "${missing[@]}"
