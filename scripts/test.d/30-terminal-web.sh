#!/usr/bin/env bash
# The embedded terminal bundle (crates/dozlab-terminal/web/dist) must be the
# one its sources produce: scripts/setup has just rebuilt it, so any difference
# from the committed files means someone changed web/src without committing
# the rebuilt bundle (run scripts/setup and commit web/dist).
set -euo pipefail
cd "$(dirname "$0")/../.."
dist=crates/dozlab-terminal/web/dist
if ! command -v node >/dev/null || [ ! -d crates/dozlab-terminal/web/node_modules ]; then
  echo "SKIP: node or crates/dozlab-terminal/web/node_modules missing (run scripts/setup)"
  exit 0
fi
(cd crates/dozlab-terminal/web && node build.mjs)
if ! git rev-parse --git-dir >/dev/null 2>&1; then
  echo "SKIP: not a git checkout, cannot compare the bundle"
  exit 0
fi
if git diff --quiet -- "$dist" && [ -z "$(git ls-files --others --exclude-standard -- "$dist")" ]; then
  echo "terminal bundle is current"; echo "web-bundle: 1 passed, 0 failed"
else
  git diff --stat -- "$dist"
  echo "terminal bundle is stale: run scripts/setup and commit $dist"; echo "web-bundle: 0 passed, 1 failed"
  exit 1
fi
