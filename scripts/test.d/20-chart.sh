#!/usr/bin/env bash
# Chart, FluxCD and classroom-output tests: pytest in the project's venv
# (made by scripts/setup.d/20-python.sh). pytest's exit code is this script's;
# "no tests collected" (pytest exit 5) is a failure, not a pass.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x .venv/bin/python ]; then
  bash scripts/setup.d/20-python.sh
fi
# The classroom tests run the real binary; build it if the caller has not.
if [ -z "${DOZLAB_BIN:-}" ]; then
  cargo build --quiet --bin dozlab
  DOZLAB_BIN="$PWD/target/debug/dozlab"
fi
export DOZLAB_BIN

set +e
.venv/bin/python -m pytest tests/chart -q -rs -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "chart tests: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
