#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (CPU only) for the integration tests and prints its path.
#
# PyPI is the only place llama.cpp's source can come from here: the llama-cpp-python sdist vendors
# a full llama.cpp tree. We compile just the server target at -O0 (the build is dominated by C++
# front-end time, so a low optimisation level roughly halves it) and cache the binary, so only the
# first run on a machine pays the few minutes. The version pin fixes the llama.cpp commit, and
# with it the JSON shapes the tests expect.
set -euo pipefail

version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
opt="${LLAMA_SERVER_OPT:--O0}"
cache_dir="${LLAMA_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/starcoder-router/llama-server-$version$opt}"
binary="$cache_dir/llama-server"

if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi

python="${PYTHON:-python3}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$cache_dir"

# --no-binary for this one package only: asking for sdists of everything also rebuilds its build deps.
"$python" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
  "llama-cpp-python==$version" -d "$scratch" >&2
tar -xzf "$scratch/llama_cpp_python-$version.tar.gz" -C "$scratch" \
  "llama_cpp_python-$version/vendor/llama.cpp"
src="$scratch/llama_cpp_python-$version/vendor/llama.cpp"

generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi

# Every switch that would make the build reach the network (web UI download, curl, openssl) is off.
cmake -S "$src" -B "$scratch/build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS_RELEASE="$opt -DNDEBUG" -DCMAKE_CXX_FLAGS_RELEASE="$opt -DNDEBUG" \
  -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
  -DGGML_NATIVE=ON -DGGML_OPENMP=OFF -DGGML_LLAMAFILE=OFF -DGGML_CCACHE=OFF >&2
cmake --build "$scratch/build" --target llama-server -j"$(nproc)" >&2

cp "$scratch/build/bin/llama-server" "$binary.partial"
mv "$binary.partial" "$binary"
echo "$binary"
