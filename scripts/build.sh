#!/usr/bin/env bash
# Installs dependencies, configures and builds livemig into BUILD_DIR
# (default: build). LM_SANITIZE=1 builds with ASan+UBSan into build-asan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if [ "${LM_SANITIZE:-0}" = 1 ]; then
  build_dir=${BUILD_DIR:-build-asan}
  extra=(-Db_sanitize=address,undefined -Db_lundef=false)
else
  build_dir=${BUILD_DIR:-build}
  extra=()
fi
if [ ! -f "$build_dir/build.ninja" ]; then
  meson setup "$build_dir" "${extra[@]}" >/dev/null
fi
ninja -C "$build_dir" >&2
echo "$build_dir"
