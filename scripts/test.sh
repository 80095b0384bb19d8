#!/usr/bin/env bash
# Cairn's test command: the whole workspace suite on SQLite and Postgres, including the
# interop tests against the real DBOS Transact 3.4 (Python).
#
#   scripts/test.sh                    # local Postgres on 127.0.0.1:5432, started if needed
#   CAIRN_TEST_POSTGRES=postgres://user:pass@host:5432 scripts/test.sh
#
# Extra arguments go to the test runner (cargo nextest run, or cargo test), e.g. a filter.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- Postgres -------------------------------------------------------------------------------
export CAIRN_TEST_POSTGRES="${CAIRN_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}"

postgres_reachable() {
    if command -v psql >/dev/null 2>&1; then
        psql "$CAIRN_TEST_POSTGRES/postgres" -Atqc 'SELECT 1' >/dev/null 2>&1
    elif command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -d "$CAIRN_TEST_POSTGRES/postgres" >/dev/null 2>&1
    else
        # No client tools: try the TCP port of the URL (default 5432).
        local hostport="${CAIRN_TEST_POSTGRES#*://}"
        hostport="${hostport#*@}"
        hostport="${hostport%%/*}"
        local host="${hostport%%:*}" port="5432"
        [[ "$hostport" == *:* ]] && port="${hostport##*:}"
        (exec 3<>"/dev/tcp/$host/$port") >/dev/null 2>&1
    fi
}

step "Postgres at $CAIRN_TEST_POSTGRES"
if ! postgres_reachable; then
    if [[ "$CAIRN_TEST_POSTGRES" == "postgres://postgres@127.0.0.1:5432" ]] \
        && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null \
        && command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
        for version in $(ls /etc/postgresql); do
            echo "starting the local PostgreSQL $version cluster 'main'" >&2
            pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
        done
        for _ in $(seq 1 40); do
            postgres_reachable && break
            sleep 0.5
        done
    fi
fi
if ! postgres_reachable; then
    if [[ "$CAIRN_TEST_POSTGRES" == "postgres://postgres@127.0.0.1:5432" ]]; then
        die "no PostgreSQL on 127.0.0.1:5432: install it (apt-get install postgresql) or set CAIRN_TEST_POSTGRES"
    fi
    die "CAIRN_TEST_POSTGRES=$CAIRN_TEST_POSTGRES is not reachable (the tests need a server where they may create databases)"
fi

# --- DBOS Transact 3.4 (Python), for the interop tests ---------------------------------------
step "DBOS 3.4 Python venv"
venv_output="$(scripts/python-venv.sh)" || die "scripts/python-venv.sh failed (see above); the interop tests need DBOS 3.4"
CAIRN_DBOS_PYTHON="$(printf '%s\n' "$venv_output" | tail -n 1)"
export CAIRN_DBOS_PYTHON
echo "CAIRN_DBOS_PYTHON=$CAIRN_DBOS_PYTHON" >&2
CAIRN_DBOS_TS_DIR="$(scripts/node-client.sh | tail -n 1)" && export CAIRN_DBOS_TS_DIR || die "scripts/node-client.sh failed (see above); the TypeScript interop tests need @dbos-inc/dbos-sdk 5.3.0"

# --- Headless Chromium, for the dashboard's browser tests --------------------------------------
step "Chromium and chromedriver"
CAIRN_CHROMEDRIVER="$(scripts/chromium.sh | tail -n 1)" && export CAIRN_CHROMEDRIVER || die "scripts/chromium.sh failed (see above); the dashboard's browser tests need Debian's chromium and chromium-driver"

# --- The suite -------------------------------------------------------------------------------
THREADS="${CAIRN_TEST_THREADS:-4}"
status=0
# Doctests first (nextest does not run them), so the suite's own summary closes the output.
step "cargo test -p cairn --doc --features admin,otel,sqlx-postgres,sqlx-sqlite"
cargo test -p cairn --doc --features admin,otel,sqlx-postgres,sqlx-sqlite || status=$?

# The chaos tests stop and restart a Postgres server of their own, cut connections and lock
# SQLite files: they run last, one at a time, so the rest of the suite does not starve them.
if cargo nextest --version >/dev/null 2>&1; then
    # `admin` comes with cairn-cli; `otel` and the sqlx data sources are asked for, so their
    # tests (tests/otel.rs, tests/datasource_sqlx.rs) run too.
    step "cargo nextest run --workspace --features cairn/otel,cairn/sqlx-postgres,cairn/sqlx-sqlite --no-fail-fast --test-threads $THREADS (all but chaos)"
    cargo nextest run --workspace --features cairn/otel,cairn/sqlx-postgres,cairn/sqlx-sqlite --no-fail-fast --test-threads "$THREADS" -E 'not binary(chaos)' "$@" || status=$?
    step "cargo nextest run -p cairn --test chaos --test-threads 1"
    cargo nextest run -p cairn --no-fail-fast --test-threads 1 -E 'binary(chaos)' "$@" || status=$?
else
    step "cargo test --workspace --no-fail-fast (cargo-nextest not installed)"
    cargo test --workspace --no-fail-fast --lib --bins --examples "$@" -- --test-threads "$THREADS" || status=$?
    cargo test -p cairn-cli --no-fail-fast --tests "$@" -- --test-threads "$THREADS" || status=$?
    for test in crates/cairn/tests/*.rs; do
        name="$(basename "$test" .rs)"
        threads="$THREADS"
        [[ "$name" == chaos ]] && threads=1
        cargo test -p cairn --features admin,otel,sqlx-postgres,sqlx-sqlite --no-fail-fast --test "$name" "$@" -- --test-threads "$threads" || status=$?
    done
fi

if [[ $status -ne 0 ]]; then
    step "FAILED (exit $status)"
fi
exit "$status"
