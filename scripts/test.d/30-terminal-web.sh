#!/usr/bin/env bash
# The embedded terminal bundle (crates/dozlab-terminal/web/dist) must be the
# one its sources produce: scripts/setup has just rebuilt it, so any difference
# from the committed files means someone changed web/src without committing
# the rebuilt bundle (run scripts/setup and commit web/dist).
set -euo pipefail
cd "$(dirname "$0")/../.."
dist=crates/dozlab-terminal/web/dist
# A skip is recorded like a Rust test's (docs/testing.md): printed, appended
# to $DOZLAB_SKIP_LOG, and a failure in strict mode (DOZLAB_STRICT_SKIPS=1).
skip() { # NEED REASON
  local line="SKIPPED scripts/test.d/30-terminal-web.sh: $2 [needs $1]"
  echo "$line"
  if [ -n "${DOZLAB_SKIP_LOG:-}" ]; then echo "$line" >>"$DOZLAB_SKIP_LOG"; fi
  if [ "${DOZLAB_STRICT_SKIPS:-}" = 1 ]; then echo "strict mode: this must not skip" >&2; exit 1; fi
  exit 0
}
if ! command -v node >/dev/null || [ ! -d crates/dozlab-terminal/web/node_modules ]; then
  skip tool:node "node or crates/dozlab-terminal/web/node_modules missing (run scripts/setup)"
fi
(cd crates/dozlab-terminal/web && node build.mjs)
if ! git rev-parse --git-dir >/dev/null 2>&1; then
  skip git-checkout "not a git checkout, cannot compare the bundle"
fi
if git diff --quiet -- "$dist" && [ -z "$(git ls-files --others --exclude-standard -- "$dist")" ]; then
  echo "terminal bundle is current"; echo "web-bundle: 1 passed, 0 failed"
else
  git diff --stat -- "$dist"
  echo "terminal bundle is stale: run scripts/setup and commit $dist"; echo "web-bundle: 0 passed, 1 failed"
  exit 1
fi
