#!/usr/bin/env bash
# Installs llama-cpp-python[server], the real third-party OpenAI-compatible server the tests
# run the embedded GGUF behind. It is a source build (about 4-8 minutes on 2 cores), so the
# wheel is built once per machine into the user cache, keyed by version and build flags.
# GGML_NATIVE=OFF matters: a -march=native build segfaults on VMs whose CPU advertises AMX
# without the kernel enabling it.
set -euo pipefail
PY=${1:?usage: install-llama-server.sh PYTHON}
VERSION=0.3.36
FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF"
KEY=$(printf '%s %s' "$VERSION" "$FLAGS" | sha256sum | cut -c1-12)
DIR="${WORKBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/workbench}/wheels/llama-cpp-python-$KEY"
if ! compgen -G "$DIR/llama_cpp_python-$VERSION-*.whl" > /dev/null; then
  echo "building llama-cpp-python $VERSION once for this machine (a few minutes) into $DIR"
  rm -rf "$DIR.tmp"
  CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PY" -m pip wheel -q --no-deps --no-cache-dir "llama-cpp-python==$VERSION" -w "$DIR.tmp"
  mv "$DIR.tmp" "$DIR"
fi
"$PY" -m pip install -q --find-links "$DIR" --only-binary llama-cpp-python \
  "llama-cpp-python[server]==$VERSION"
