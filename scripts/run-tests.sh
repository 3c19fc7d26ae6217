#!/usr/bin/env bash
# Builds livemig and runs the default test suite (excludes 'slow' and 'perf').
# Extra arguments go to 'meson test' (e.g. --suite slow, --setup all).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=$(bash scripts/build.sh)
status=0
meson test -C "$build_dir" --print-errorlogs --num-processes 2 "$@" || status=$?
# One plain closing line for CI readers that do not know meson.
python3 - "$build_dir/meson-logs/testlog.json" <<'PY'
import json, sys
counts = {"OK": 0, "FAIL": 0, "SKIP": 0, "TIMEOUT": 0, "ERROR": 0, "EXPECTEDFAIL": 0, "UNEXPECTEDPASS": 0}
for line in open(sys.argv[1]):
    r = json.loads(line).get("result")
    counts[r] = counts.get(r, 0) + 1
failed = counts["FAIL"] + counts["TIMEOUT"] + counts["ERROR"] + counts["UNEXPECTEDPASS"]
print(f"tests: {counts['OK'] + counts['EXPECTEDFAIL']} passed, {failed} failed, {counts['SKIP']} skipped")
PY
exit $status
