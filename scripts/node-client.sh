#!/usr/bin/env bash
# Install (once) DBOS's TypeScript client, @dbos-inc/dbos-sdk at the version pinned in
# scripts/interop/ts/package-lock.json, for the TypeScript interop tests. Prints, on its last
# line, the directory holding the client script and its node_modules.
#
#   scripts/node-client.sh              # installs into target/dbos-ts
#   CAIRN_DBOS_TS_DIR=/some/dir scripts/node-client.sh
#
# The sources (package.json, package-lock.json, client.js) stay in scripts/interop/ts; they
# are copied next to node_modules under target/, which git ignores. `npm ci` runs only when
# the lock file changed or the install is missing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$REPO/scripts/interop/ts"
DEST="${CAIRN_DBOS_TS_DIR:-$REPO/target/dbos-ts}"
SDK_VERSION="$(sed -n 's/.*"@dbos-inc\/dbos-sdk": *"\([0-9.]*\)".*/\1/p' "$SRC/package.json" | head -n 1)"

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool not found; the TypeScript interop tests need Node.js 20+ and npm (apt-get install nodejs npm)" >&2
        exit 1
    fi
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < 20 )); then
    echo "error: Node.js $(node --version) is too old; @dbos-inc/dbos-sdk $SDK_VERSION needs Node.js 20+" >&2
    exit 1
fi

mkdir -p "$DEST"
cp "$SRC/client.js" "$DEST/client.js"

installed_version() {
    node -p "require('$DEST/node_modules/@dbos-inc/dbos-sdk/package.json').version" 2>/dev/null || true
}

if cmp -s "$SRC/package-lock.json" "$DEST/package-lock.json" \
    && cmp -s "$SRC/package.json" "$DEST/package.json" \
    && [[ "$(installed_version)" == "$SDK_VERSION" ]]; then
    echo "$DEST"
    exit 0
fi

echo "installing @dbos-inc/dbos-sdk $SDK_VERSION into $DEST (npm ci)" >&2
cp "$SRC/package.json" "$SRC/package-lock.json" "$DEST/"
(cd "$DEST" && npm ci --no-audit --no-fund --loglevel=error >&2) || {
    echo "error: 'npm ci' in $DEST failed (see above)" >&2
    exit 1
}
if [[ "$(installed_version)" != "$SDK_VERSION" ]]; then
    echo "error: $DEST does not hold @dbos-inc/dbos-sdk $SDK_VERSION after npm ci" >&2
    exit 1
fi
echo "$DEST"
