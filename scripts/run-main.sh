#!/usr/bin/env bash
# Builds livemig and runs the main job: the host check, then the default
# scenario (configs/default.toml) once the migration engine exists.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=$(bash scripts/build.sh)
"$build_dir/harness/livemig" check
