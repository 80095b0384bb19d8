#!/usr/bin/env bash
# Create (once) the Python virtualenv holding DBOS Transact 3.4, the reference implementation
# the interop tests compare Cairn against. Prints the venv's python on its last line.
#
#   scripts/python-venv.sh            # venv at target/dbos-venv
#   CAIRN_VENV=/some/dir scripts/python-venv.sh
set -euo pipefail

DBOS_VERSION=3.4.0
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CAIRN_VENV:-$REPO/target/dbos-venv}"
PYTHON="$VENV/bin/python"

installed_version() {
    "$PYTHON" -c "import importlib.metadata as m, dbos; print(m.version('dbos'))" 2>/dev/null || true
}

if [[ -x "$PYTHON" && "$(installed_version)" == "$DBOS_VERSION" ]]; then
    echo "$PYTHON"
    exit 0
fi

if ! command -v python3 >/dev/null 2>&1; then
    echo "error: python3 not found; the DBOS interop tests need Python 3.9+ (apt-get install python3 python3-venv)" >&2
    exit 1
fi

echo "creating $VENV with dbos==$DBOS_VERSION" >&2
if [[ ! -x "$PYTHON" ]]; then
    python3 -m venv "$VENV" >&2 || {
        echo "error: 'python3 -m venv $VENV' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    }
fi
"$PYTHON" -m pip install --quiet "dbos==$DBOS_VERSION" >&2 || {
    echo "error: 'pip install dbos==$DBOS_VERSION' into $VENV failed" >&2
    exit 1
}
if [[ "$(installed_version)" != "$DBOS_VERSION" ]]; then
    echo "error: $VENV does not import dbos $DBOS_VERSION after installing it" >&2
    exit 1
fi
echo "$PYTHON"
