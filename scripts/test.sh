#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy --strict), then pytest (warnings are errors).
# Installs what it needs first (scripts/bootstrap.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

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
