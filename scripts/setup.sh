#!/bin/sh
# Install everything xfrmctl's demo and tests need on a Debian 12 machine (idempotent).
# Run as root: it installs Debian packages for the real-kernel lab.
set -eu
cd "$(dirname "$0")/.."

# The interpreter: Debian's own /usr/bin/python3 where it is 3.11 or newer, else the first
# python3 on PATH. Debian builds it with PGO and LTO and links libpython statically; a
# from-source build (pyenv's default: --enable-shared, no --enable-optimizations) runs the
# daemon 15-40% slower and starts ~160 ms later under the lab's emulation (bench/README.md).
python=python3
if /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
    python=/usr/bin/python3
fi

need_apt=""
command -v "$python" >/dev/null 2>&1 || need_apt="$need_apt python3"
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
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

# The virtualenv, reinstalled when pyproject.toml or the interpreter changed.
base=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c 'import os, sys; print(os.path.realpath(sys._base_executable))' 2>/dev/null)" != "$base" ]; then
    echo "setup: rebuilding .venv on $base" >&2
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=.venv/.xfrmctl-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -c 'import xfrmctl, pyroute2, cryptography, pydantic, typer, pytest'
    # The wheels of xfrmctl's dependencies and of its build backend, for the Ansible role's
    # offline install test (tests/ansible/test_role_netns.py), which builds xfrmctl's own.
    rm -rf .venv/wheelhouse
    .venv/bin/python -m pip wheel -q -w .venv/wheelhouse 'setuptools>=77' wheel . 2>&1 \
        | grep -v '^WARNING: Location' || true
    rm -rf .venv/wheelhouse/xfrmctl-*.whl build  # build: setuptools' in-tree leftovers
    echo "$want" > "$stamp"
fi

# setuptools comes with every 3.11 venv and its distutils-precedence.pth imports a module at
# each interpreter start (~15 ms of each `xfrmctl up` under the lab's emulation). Nothing here
# needs it at run time: pip builds xfrmctl in an isolated environment of its own.
if ls .venv/lib/python3*/site-packages/distutils-precedence.pth >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall -q -y setuptools 2>&1 | grep -v '^WARNING: Location' || true
fi

# QEMU, Debian's distro kernel (ESP/AH as modules), tcpdump, nftables, virtme-ng.
.venv/bin/python integration/lab.py install
