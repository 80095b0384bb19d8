#!/usr/bin/env bash
# Installs what the dashboard's browser tests drive: headless Chromium and chromedriver, from
# Debian's `chromium` and `chromium-driver` packages. Idempotent: does nothing when both are
# there. The last line of output is the chromedriver path (the tests read $CAIRN_CHROMEDRIVER,
# else /usr/bin/chromedriver).
#
#   scripts/chromium.sh && cargo nextest run -p cairn --features admin --test dashboard_browser
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [[ ! -x "$CHROMIUM" || ! -x "$CHROMEDRIVER" ]]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        printf 'error: %s\n' "apt-get not found: install chromium and chromedriver yourself and set CAIRN_CHROMEDRIVER" >&2
        exit 1
    fi
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then
        SUDO="sudo"
    fi
    printf '==> installing chromium and chromium-driver (apt-get)\n' >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
fi

"$CHROMEDRIVER" --version >&2
echo "$CHROMEDRIVER"
