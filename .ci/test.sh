#!/usr/bin/env bash
# Set up everything the test suite needs, then run it. This is the README's test command.
#
#   bash .ci/test.sh                          # all tests, in .venv (python3)
#   bash .ci/test.sh -k router                # extra arguments go to pytest
#   PYTHON=python3.13 VENV=.venv313 bash .ci/test.sh   # the same suite on another Python
#
# It checks the machine first and stops at once, naming what to install, when something is
# missing that it cannot install itself: Python 3.11 or newer with its venv module, cmake and a
# C++ compiler (llama-server is built from source), redis-server, and a real Chromium (Ubuntu's
# `chromium` package is only a stub that asks for the snap). As root it installs the Debian
# packages itself; with password-less sudo, through sudo. Then it creates the venv with the
# package and its dev extras, builds llama.cpp's llama-server once (cached under ~/.cache; the
# local-inference tests start it with a tiny model they generate), and runs pytest. Because this
# script provides Redis, Chromium and llama-server, the tests that need them fail rather than
# skip when they are missing. SERVERS=0 skips those (and their setup): the second-Python pass of
# .ci/run uses it, since the integration tests exercise the servers, not the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
venv="${VENV:-.venv}"
servers="${SERVERS:-1}"

die() {
  echo ".ci/test.sh: $*" >&2
  exit 1
}

command -v "$python" >/dev/null 2>&1 || die "no $python on PATH: install Python 3.11 or newer"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "$("$python" -V 2>&1) is too old: starcoder-router needs Python 3.11 or newer (set PYTHON=)"

# Debian/Ubuntu packages: installed here when we may, else named in the error.
apt_install() {
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq >/dev/null
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    return 1
  fi
}

# A Chromium that runs: the CHROMIUM variable, or `chromium`/`chromium-browser` unless it is
# Ubuntu's snap stub (a script that only says to install the snap).
real_chromium() {
  local candidate
  for candidate in "${CHROMIUM:-}" chromium chromium-browser; do
    [ -n "$candidate" ] || continue
    candidate="$(command -v "$candidate" 2>/dev/null)" || continue
    if "$candidate" --version 2>&1 | grep -qi "chromium\|chrome" &&
        ! "$candidate" --version 2>&1 | grep -qi "snap"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

venv_works() {
  local probe
  probe="$(mktemp -d)"
  "$python" -m venv "$probe/v" >/dev/null 2>&1
  local ok=$?
  rm -rf "$probe"
  return $ok
}

missing=()
[ -x "$venv/bin/python" ] || venv_works || missing+=("python3-venv")
if [ "$servers" = "1" ]; then
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || missing+=(g++)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)  # the cluster tests join nodes
  real_chromium >/dev/null || missing+=(chromium)
  { command -v node && command -v npm; } >/dev/null 2>&1 || missing+=(nodejs npm)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}" ||
    die "missing: ${missing[*]}. Install them (apt-get install ${missing[*]}), or run this as root"
  [ -x "$venv/bin/python" ] || venv_works ||
    die "'$python -m venv' still fails: install the venv module for $("$python" -V 2>&1)"
  if [ "$servers" = "1" ]; then
    for tool in cmake redis-server redis-cli node npm; do
      command -v "$tool" >/dev/null 2>&1 || die "$tool is still missing after apt-get install"
    done
    real_chromium >/dev/null || die "chromium here is a stub for the snap, which does not run" \
      "in containers: install a real Chromium or Chrome (Debian's chromium package, or" \
      "google-chrome-stable) and set CHROMIUM=/path/to/it"
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e '.[dev]'

if [ "$servers" = "1" ]; then
  CHROMIUM="$(real_chromium)"
  LLAMA_SERVER_BIN="$(PYTHON="$venv/bin/python" bash .ci/build-llama-server.sh)"
  export CHROMIUM LLAMA_SERVER_BIN
  bash .ci/npm-clients.sh  # the JavaScript clients the gateway tests run (tests/js_clients)
  export REQUIRE_REDIS=1 REQUIRE_LLAMA_SERVER=1 REQUIRE_CHROMIUM=1 REQUIRE_NODE_CLIENTS=1
  exec "$venv/bin/python" -m pytest "$@"
fi
# Without the servers: everything but the tests that start llama-server or a browser (Redis
# tests skip on their own when redis-server is absent; where it is present they run).
exec "$venv/bin/python" -m pytest --ignore=tests/real_servers \
  --ignore=tests/simulate/test_report_browser.py "$@"
