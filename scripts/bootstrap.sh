#!/usr/bin/env bash
# Make .venv (Python >= 3.11) with the project and its development tools installed.
# Safe to run repeatedly: it reinstalls only when pyproject.toml changed. On a fresh Debian
# machine it installs what is missing (python3-venv) with apt-get (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)

need_apt=()
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "bootstrap: $PYTHON is missing or older than 3.11" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        need_apt+=(python3-venv)
    fi
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -e "$STAMP" ]; then
    echo "bootstrap: installing the project and its tools into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
