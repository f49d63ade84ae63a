#!/usr/bin/env bash
# The chart's session pod for real under Podman (tests/pod): builds the images
# with scripts/build-images (release binary copied in; cached layers make this
# seconds after the first run), serves the cached `vm` guest image with
# `dozlab image serve`, plays the rendered pod with `podman kube play` and
# checks it end to end. pytest's exit code is this script's; "no tests
# collected" (pytest exit 5) is a failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x .venv/bin/python ]; then
  bash scripts/setup.d/20-python.sh
fi
cargo build --quiet --release --locked --bin dozlab
export DOZLAB_RELEASE_BIN="$PWD/target/release/dozlab"
# scripts/test-image uses it for `dozlab image cached`.
export DOZLAB_BIN="${DOZLAB_BIN:-$DOZLAB_RELEASE_BIN}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/tests/pod/containers.conf}"

set +e
.venv/bin/python -m pytest tests/pod -q -rs -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pod tests: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
