#!/usr/bin/env bash
# Install the JavaScript clients the gateway tests drive (tests/js_clients: the `ollama` npm
# client and Continue's `@continuedev/openai-adapters`) exactly as the lockfile pins them.
# Skipped when node_modules already matches the lockfile, so it runs offline once installed;
# npm's own cache (~/.npm) serves a reinstall. Without node and npm it says so and leaves the
# tests to fail under REQUIRE_NODE_CLIENTS=1.
set -euo pipefail
cd "$(dirname "$0")/../tests/js_clients"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "npm-clients: node or npm not found; the JavaScript client tests cannot run" >&2
  exit 0
fi
stamp=node_modules/.lock-sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error >/dev/null
echo "$want" > "$stamp"
