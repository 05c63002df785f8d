#!/usr/bin/env bash
# Set up everything the test suite needs, then run it. This is the README's test command.
#
#   bash .ci/test.sh            # all tests
#   bash .ci/test.sh -k router  # extra arguments go to pytest
#
# It creates .venv with the package and its dev extras, installs Debian's redis-server and
# chromium when they are missing (the Redis tests start their own server on a loopback port; the
# simulation report test starts a headless browser), builds llama.cpp's
# llama-server once (cached under ~/.cache; the local-inference tests start it with a tiny model
# they generate), and then runs pytest. Because this script provides Redis, Chromium and
# llama-server, the tests that need them fail rather than skip when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

# Debian packages the tests start themselves: redis-server (spend stores) and chromium (the
# simulation report is opened in a real headless browser).
apt_install() {
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq >/dev/null
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)  # the cluster tests join nodes
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi

LLAMA_SERVER_BIN="$(PYTHON=.venv/bin/python bash .ci/build-llama-server.sh)"
export LLAMA_SERVER_BIN
bash .ci/npm-clients.sh  # the JavaScript clients the gateway tests run (tests/js_clients)
export REQUIRE_REDIS=1 REQUIRE_LLAMA_SERVER=1 REQUIRE_CHROMIUM=1 REQUIRE_NODE_CLIENTS=1

exec .venv/bin/python -m pytest "$@"
