// Bundles the page (xterm.js + addons + our code and CSS) into dist/ for the
// binary to embed. Run by scripts/setup.d/10-web.sh; output is committed.
import * as esbuild from 'esbuild';

await esbuild.build({
  entryPoints: ['src/main.js'],
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  outfile: 'dist/terminal.js',
  legalComments: 'eof',
  logLevel: 'warning',
});
