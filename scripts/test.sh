#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy --strict), then pytest (warnings are errors).
# Installs what it needs first (scripts/bootstrap.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

# Real peers the tests start: a throwaway PostgreSQL server (tests/cloud_registry/pg_cluster.py),
# a mosquitto broker (tests/mosquitto.py), socat pty pairs for serial Modbus lines, and ip
# (iproute2) for the BACnet network namespaces. Install the Debian packages that are missing.
need=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v socat >/dev/null || need+=(socat)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
    echo "test.sh: installing Debian packages for the tests' real peers: ${need[*]}" >&2
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
        sudo_cmd=(sudo)
    fi
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== ruff" >&2
ruff check .
ruff format --check . >/dev/null || { ruff format --check . ; exit 1; }
echo "== mypy --strict" >&2
mypy
echo "== pytest" >&2
status=0
pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
