#!/usr/bin/env bash
# Builds livemig and runs the main job: the host check, then the default
# scenario (configs/default.toml: a 1 GiB guest pre-copied over io_uring with
# the adaptive policy), writing results/default.json.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=$(bash scripts/build.sh)
"$build_dir/harness/livemig" check
mkdir -p results
exec "$build_dir/harness/livemig" run configs/default.toml --out results/default.json "$@"
