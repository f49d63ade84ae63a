#!/usr/bin/env bash
# The web terminal's page: installs xterm.js, its fit/web-links/search addons,
# esbuild and playwright-core (the browser test drives Debian's chromium; no
# browser is downloaded) from npm with the committed package-lock.json, then
# rebuilds crates/dozlab-terminal/web/dist, which the binary embeds. dist/ is
# committed so a fresh clone builds without npm; scripts/test.d/30-terminal-web.sh
# checks that the committed bundle matches its sources.
set -euo pipefail
cd "$(dirname "$0")/../../crates/dozlab-terminal/web"

if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "setup: node/npm not found: the committed terminal bundle is used as is and the browser test is skipped" >&2
  echo "setup: install Node.js 18+ with npm to rebuild it" >&2
  exit 0
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
stamp=node_modules/.dozlab-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: npm ci (web terminal page)" >&2
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$want" >"$stamp"
fi
node build.mjs
