#!/bin/sh
# Install everything xfrmctl's demo and tests need on a Debian 12 machine (idempotent).
# Run as root: it installs Debian packages for the real-kernel lab.
set -eu
cd "$(dirname "$0")/.."

need_apt=""
command -v python3 >/dev/null 2>&1 || need_apt="$need_apt python3"
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need_apt="$need_apt python3-venv"
fi
command -v git >/dev/null 2>&1 || need_apt="$need_apt git"
if [ -n "$need_apt" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: need Debian packages:$need_apt (run as root)" >&2
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends $need_apt
fi

# The virtualenv, reinstalled only when pyproject.toml changed.
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.xfrmctl-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -c 'import xfrmctl, pyroute2, cryptography, pydantic, typer, pytest'
    echo "$want" > "$stamp"
fi

# QEMU, Debian's distro kernel (ESP/AH as modules), tcpdump, nftables, virtme-ng.
.venv/bin/python integration/lab.py install
