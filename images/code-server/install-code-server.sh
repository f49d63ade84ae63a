#!/usr/bin/env bash
# Usage: install-code-server.sh VERSION PREFIX
#
# Installs code-server VERSION from the npm registry into PREFIX
# (PREFIX/lib/node_modules/code-server, launcher PREFIX/bin/code-server) with
# the Node 20 found on PATH, reaching nothing but the npm registry:
#   - code-server's VS Code lockfile pins @vscode/proxy-agent to a git commit;
#     the registry tarball of the same version has the same integrity hash, so
#     the entry is pointed at the registry (npm still verifies the hash);
#   - @vscode/ripgrep downloads rg from elsewhere in its install script; an
#     existing bin/rg (Debian's ripgrep, RG=/usr/bin/rg) makes it skip that;
#   - native modules (node-pty, spdlog, kerberos, ...) are compiled with the
#     local toolchain (g++, make, python3, libkrb5-dev) and Node's own headers.
# Used by scripts/setup.d/40-code-server.sh (the host, for `dozlab up --vscode`)
# and images/code-server/Containerfile (the chart's code-server image).
set -euo pipefail
version=${1:?usage: install-code-server.sh VERSION PREFIX}
prefix=${2:?usage: install-code-server.sh VERSION PREFIX}
rg=${RG:-/usr/bin/rg}

die() { echo "install-code-server: $*" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) || die "node not found on PATH: code-server $version needs Node 20"
[ "$major" = 20 ] || die "node on PATH is v$(node --version) but code-server $version needs Node 20 (set PATH to a Node 20)"
[ -x "$rg" ] || die "ripgrep not found at $rg: install Debian's ripgrep (apt-get install ripgrep) or set RG"
for tool in g++ make python3; do
  command -v "$tool" >/dev/null || die "$tool not found: native modules are compiled here (apt-get install g++ make python3 libkrb5-dev)"
done
[ -e /usr/include/gssapi/gssapi.h ] || die "gssapi/gssapi.h not found: install libkrb5-dev (the kerberos module is compiled here)"

export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
# node-gyp: use the headers of the running Node instead of downloading them.
export npm_config_nodedir
npm_config_nodedir=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
[ -e "$npm_config_nodedir/include/node/node_api.h" ] || die "no Node headers under $npm_config_nodedir/include/node (install a Node 20 that ships them)"

work=$(mktemp -d "${TMPDIR:-/tmp}/code-server-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lib"
npm install --global --prefix "$work" --ignore-scripts --loglevel=error "code-server@$version" >&2
pkg="$work/lib/node_modules/code-server"
[ -d "$pkg/lib/vscode" ] || die "code-server@$version has no lib/vscode: not a release this script knows"

# code-server's own dependencies (argon2 is native); not its postinstall, which
# this script replaces.
(cd "$pkg" && npm rebuild argon2 --loglevel=error >&2)

cd "$pkg/lib/vscode"
# Entries resolved from git get the registry tarball of the same version
# (npm view names it); their integrity hash stays and npm checks it.
node - <<'JS'
const fs = require("fs");
const { execFileSync } = require("child_process");
const f = "npm-shrinkwrap.json";
const lock = JSON.parse(fs.readFileSync(f, "utf8"));
for (const [path, entry] of Object.entries(lock.packages || {})) {
  if (entry.resolved && entry.resolved.startsWith("git")) {
    const name = path.replace(/^.*node_modules\//, "");
    const spec = `${name}@${entry.version}`;
    entry.resolved = execFileSync("npm", ["view", spec, "dist.tarball"], { encoding: "utf8" }).trim();
    if (!entry.resolved) throw new Error(`${spec} is not on the npm registry`);
    console.error(`install-code-server: ${spec} from the registry (integrity unchanged)`);
  }
}
fs.writeFileSync(f, JSON.stringify(lock, null, 2) + "\n");
JS
npm install --omit=dev --ignore-scripts --loglevel=error >&2
mkdir -p node_modules/@vscode/ripgrep/bin
cp "$rg" node_modules/@vscode/ripgrep/bin/rg
npm rebuild --loglevel=error >&2
ln -sfn node_modules node_modules.asar
ln -sfn code-linux.sh bin/remote-cli/code-server
ln -sfn browser-linux.sh bin/helpers/browser.sh
cd extensions
npm install --omit=dev --loglevel=error >&2

cd "$pkg"
node out/node/entry.js --version >/dev/null || die "the installed code-server does not start"
mkdir -p "$prefix/lib/node_modules" "$prefix/bin"
rm -rf "$prefix/lib/node_modules/code-server.new"
mv "$pkg" "$prefix/lib/node_modules/code-server.new"
rm -rf "$prefix/lib/node_modules/code-server"
mv "$prefix/lib/node_modules/code-server.new" "$prefix/lib/node_modules/code-server"
ln -sfn ../lib/node_modules/code-server/out/node/entry.js "$prefix/bin/code-server"
echo "install-code-server: code-server $version in $prefix/lib/node_modules/code-server" >&2
